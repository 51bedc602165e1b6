"""A small but real GraphQL parser and executor for the RunPod emulator.

Parses the executable subset of the GraphQL spec (October 2021): query/mutation operations (named or
anonymous, shorthand `{...}`), variable definitions with defaults, fields with aliases, arguments
and nested selection sets, fragment definitions and spreads, inline fragments, directives
(@include/@skip honoured, others ignored), and every value form (variables, ints, floats, strings
including block strings and escapes, booleans, null, enums, lists, objects). Clients send inputs
both inline and as $variables (docs/providers.md, RunPod "Transport"), so both must work.

Execution is projection: resolvers return plain dicts/lists whose values may be callables taking
the field's arguments; the selection set picks and renames fields. Unknown fields are a validation
error (HTTP 400, as Apollo-style servers answer), which catches client typos early.
"""

import re


class GraphQLSyntaxError(Exception):
    pass


class GraphQLFieldError(Exception):
    """A resolver-level error: reported in errors[] with HTTP 200."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        self.code = code


class GraphQLValidationError(Exception):
    pass


_TOKEN = re.compile(r'''
    (?P<ws>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$&()\:=@\[\]{|}])
  | (?P<block>"""(?:\\"""|[^"]|"(?!""))*""")
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<float>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+))
  | (?P<int>-?(?:0|[1-9][0-9]*))
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
''', re.VERBOSE)

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(s):
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            n = s[i + 1]
            if n == "u":
                out.append(chr(int(s[i + 2:i + 6], 16)))
                i += 6
                continue
            if n not in _ESCAPES:
                raise GraphQLSyntaxError("invalid escape \\" + n)
            out.append(_ESCAPES[n])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _block_string(raw):
    lines = raw.replace('\\"""', '"""').splitlines()
    indent = None
    for line in lines[1:]:
        stripped = line.lstrip(" \t")
        if stripped:
            n = len(line) - len(stripped)
            indent = n if indent is None else min(indent, n)
    if indent:
        lines = lines[:1] + [l[indent:] for l in lines[1:]]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def tokenize(text):
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise GraphQLSyntaxError("Syntax Error: Unexpected character %r at offset %d" % (text[pos], pos))
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        val = m.group(kind)
        if kind == "string":
            tokens.append(("string", _unescape(val[1:-1])))
        elif kind == "block":
            tokens.append(("string", _block_string(val[3:-3])))
        else:
            tokens.append((kind, val))
    tokens.append(("eof", None))
    return tokens


class _Parser:
    def __init__(self, text):
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, kind=None, val=None):
        k, v = self.toks[self.i]
        return (kind is None or k == kind) and (val is None or v == val)

    def take(self, kind=None, val=None):
        k, v = self.toks[self.i]
        if (kind is not None and k != kind) or (val is not None and v != val):
            want = val or kind
            raise GraphQLSyntaxError("Syntax Error: Expected %s, found %s" % (want, v if v is not None else "<EOF>"))
        self.i += 1
        return v

    def document(self):
        ops, frags = [], {}
        while not self.peek("eof"):
            if self.peek("punct", "{"):
                ops.append({"type": "query", "name": None, "vars": [], "sel": self.selection_set()})
            elif self.peek("name", "fragment"):
                self.take()
                name = self.take("name")
                self.take("name", "on")
                self.take("name")
                self.directives()
                frags[name] = self.selection_set()
            elif self.peek("name", "query") or self.peek("name", "mutation") or self.peek("name", "subscription"):
                op_type = self.take()
                name = self.take("name") if self.peek("name") else None
                var_defs = self.variable_definitions()
                self.directives()
                ops.append({"type": op_type, "name": name, "vars": var_defs, "sel": self.selection_set()})
            else:
                raise GraphQLSyntaxError("Syntax Error: Unexpected %r" % (self.toks[self.i][1],))
        return ops, frags

    def variable_definitions(self):
        defs = []
        if not self.peek("punct", "("):
            return defs
        self.take()
        while not self.peek("punct", ")"):
            self.take("punct", "$")
            name = self.take("name")
            self.take("punct", ":")
            self.type_ref()
            default = None
            has_default = False
            if self.peek("punct", "="):
                self.take()
                default = self.value(const=True)
                has_default = True
            self.directives()
            defs.append((name, has_default, default))
        self.take()
        return defs

    def type_ref(self):
        if self.peek("punct", "["):
            self.take()
            self.type_ref()
            self.take("punct", "]")
        else:
            self.take("name")
        if self.peek("punct", "!"):
            self.take()

    def directives(self):
        out = []
        while self.peek("punct", "@"):
            self.take()
            name = self.take("name")
            out.append((name, self.arguments()))
        return out

    def arguments(self):
        args = {}
        if not self.peek("punct", "("):
            return args
        self.take()
        while not self.peek("punct", ")"):
            name = self.take("name")
            self.take("punct", ":")
            args[name] = self.value()
        self.take()
        return args

    def selection_set(self):
        self.take("punct", "{")
        sels = []
        while not self.peek("punct", "}"):
            if self.peek("spread"):
                self.take()
                if self.peek("name", "on"):
                    self.take()
                    self.take("name")
                    dirs = self.directives()
                    sels.append({"kind": "inline", "dirs": dirs, "sel": self.selection_set()})
                elif self.peek("punct", "{") or self.peek("punct", "@"):
                    dirs = self.directives()
                    sels.append({"kind": "inline", "dirs": dirs, "sel": self.selection_set()})
                else:
                    name = self.take("name")
                    sels.append({"kind": "spread", "name": name, "dirs": self.directives()})
            else:
                name = self.take("name")
                alias = None
                if self.peek("punct", ":"):
                    self.take()
                    alias, name = name, self.take("name")
                args = self.arguments()
                dirs = self.directives()
                sub = self.selection_set() if self.peek("punct", "{") else None
                sels.append({"kind": "field", "name": name, "alias": alias or name, "args": args,
                             "dirs": dirs, "sel": sub})
        self.take()
        if not sels:
            raise GraphQLSyntaxError("Syntax Error: empty selection set")
        return sels

    def value(self, const=False):
        k, v = self.toks[self.i]
        if k == "punct" and v == "$" and not const:
            self.take()
            return ("var", self.take("name"))
        if k == "int":
            self.take()
            return int(v)
        if k == "float":
            self.take()
            return float(v)
        if k == "string":
            self.take()
            return v
        if k == "name":
            self.take()
            if v == "true":
                return True
            if v == "false":
                return False
            if v == "null":
                return None
            return ("enum", v)
        if k == "punct" and v == "[":
            self.take()
            items = []
            while not self.peek("punct", "]"):
                items.append(self.value(const))
            self.take()
            return ("list", items)
        if k == "punct" and v == "{":
            self.take()
            fields = {}
            while not self.peek("punct", "}"):
                name = self.take("name")
                self.take("punct", ":")
                fields[name] = self.value(const)
            self.take()
            return ("object", fields)
        raise GraphQLSyntaxError("Syntax Error: Unexpected %s" % (v if v is not None else "<EOF>"))


def resolve_value(v, variables):
    """Parsed value -> plain Python (enums become their name strings)."""
    if isinstance(v, tuple):
        tag, payload = v
        if tag == "var":
            return variables.get(payload)
        if tag == "enum":
            return payload
        if tag == "list":
            return [resolve_value(x, variables) for x in payload]
        if tag == "object":
            return {k: resolve_value(x, variables) for k, x in payload.items()}
    return v


class Document:
    def __init__(self, text, operation_name=None, variables=None):
        ops, self.fragments = _Parser(text).document()
        if not ops:
            raise GraphQLValidationError("Must provide an operation.")
        if operation_name:
            chosen = [o for o in ops if o["name"] == operation_name]
            if not chosen:
                raise GraphQLValidationError('Unknown operation named "%s".' % operation_name)
            self.op = chosen[0]
        elif len(ops) > 1:
            raise GraphQLValidationError("Must provide operation name if query contains multiple operations.")
        else:
            self.op = ops[0]
        self.variables = dict(variables or {})
        for name, has_default, default in self.op["vars"]:
            if name not in self.variables and has_default:
                self.variables[name] = resolve_value(default, {})

    @property
    def operation_type(self):
        return self.op["type"]

    @property
    def operation_name(self):
        return self.op["name"]

    def root_fields(self):
        """[(alias, name, args)] of the operation's top-level fields (fragments expanded)."""
        return [(f["alias"], f["name"], {k: resolve_value(v, self.variables) for k, v in f["args"].items()}, f)
                for f in self._fields(self.op["sel"])]

    def _included(self, dirs):
        for name, args in dirs:
            cond = resolve_value(args.get("if"), self.variables)
            if name == "include" and not cond:
                return False
            if name == "skip" and cond:
                return False
        return True

    def _fields(self, sels, depth=0):
        if depth > 20:
            raise GraphQLValidationError("fragment cycle")
        out = []
        for s in sels:
            if not self._included(s["dirs"]):
                continue
            if s["kind"] == "field":
                out.append(s)
            elif s["kind"] == "inline":
                out.extend(self._fields(s["sel"], depth + 1))
            else:
                if s["name"] not in self.fragments:
                    raise GraphQLValidationError('Unknown fragment "%s".' % s["name"])
                out.extend(self._fields(self.fragments[s["name"]], depth + 1))
        return out

    def project(self, value, field, type_name="Object"):
        """Applies `field`'s selection set to a resolved value."""
        sel = field["sel"]
        if value is None:
            return None
        if isinstance(value, list):
            return [self.project(v, field, type_name) for v in value]
        if sel is None:
            if isinstance(value, dict):
                raise GraphQLValidationError('Field "%s" of type "%s" must have a selection of subfields.'
                                             % (field["name"], type_name))
            return value
        if not isinstance(value, dict):
            raise GraphQLValidationError('Field "%s" must not have a selection since it has no subfields.'
                                         % field["name"])
        out = {}
        obj_type = value.get("__typename", type_name)
        for f in self._fields(sel):
            name = f["name"]
            if name == "__typename":
                out[f["alias"]] = obj_type
                continue
            if name not in value:
                raise GraphQLValidationError('Cannot query field "%s" on type "%s".' % (name, obj_type))
            v = value[name]
            if callable(v):
                v = v({k: resolve_value(a, self.variables) for k, a in f["args"].items()})
            out[f["alias"]] = self.project(v, f, name)
        return out
