"""Hugging Face dataset viewer emulator: GET /rows, as https://huggingface.co/docs/dataset-viewer/rows
documents it, for deploy's data.hub_rows (deploy/hub_rows.h). Not a GPU cloud; it reuses the
emulator core for its server, request log, auth check and fault engine.

  GET /rows?dataset=D&config=C&split=S&offset=O&length=L
  -> 200 {"features": [{"feature_idx", "name", "type"}], "rows": [{"row_idx", "row", "truncated_cells"}],
          "num_rows_total", "num_rows_per_page": 100, "partial": false}
  errors: {"error": "..."}: 422 for a missing parameter, a negative offset or length outside 1..100;
  404 for an unknown dataset, config or split; an offset at or past the end answers no rows.

The splits served come from the config key "splits": [{"dataset", "config", "split", "num_rows",
"doc_bytes"}] (default: HuggingFaceFW/fineweb-edu, default, train, 1000 rows of ~300 bytes). Each
row has FineWeb-Edu's columns; its text is lower-case words and single spaces only (a test's tiny
tokenizer covers it), the same for the same row index every time (text_of below).
Auth: any bearer token is accepted (checked against --api-key when given); with the config key
"require_token": true a request without one answers 401.
A new version of the dataset published between two requests: the config key "changes":
[{"after_requests": N, "num_rows": R, "doc_bytes": B}] applies each change (either key may be left
out) to every split once N well-formed /rows requests have reached the splits since the last
reset (not counting those an injected fault answered); later requests serve the changed split
(doc_bytes changes every row's text, num_rows the split's size).

Fault kinds of its own (besides the core's http_status, malformed_json, drop_connection, latency):
  truncated_cells {"row": N}     row N's text cut to 100 bytes and listed in truncated_cells
  wrong_row_idx                  every row_idx of the answer one too high
  huge_answer {"bytes": N}       an extra column of N bytes on the first row
  text_not_string                the first row's text is a number
"""

from core import Provider, Response

WORDS = ("the", "outlier", "feature", "layer", "norm", "expert", "token", "model", "value", "large",
         "mixture", "router", "hidden", "state", "weight", "attention", "sequence", "window", "quantised",
         "magnitude", "dimension", "residual", "stream", "batch")

NOT_ACCESSIBLE = ("The dataset does not exist, or is not accessible without authentication (private or gated). "
                  "Please check the spelling of the dataset name or retry with authentication.")

DEFAULT_SPLITS = [{"dataset": "HuggingFaceFW/fineweb-edu", "config": "default", "split": "train",
                   "num_rows": 1000, "doc_bytes": 300}]

FEATURES = [
    ("text", {"dtype": "string", "_type": "Value"}),
    ("id", {"dtype": "string", "_type": "Value"}),
    ("dump", {"dtype": "string", "_type": "Value"}),
    ("url", {"dtype": "string", "_type": "Value"}),
    ("file_path", {"dtype": "string", "_type": "Value"}),
    ("language", {"dtype": "string", "_type": "Value"}),
    ("language_score", {"dtype": "float64", "_type": "Value"}),
    ("token_count", {"dtype": "int64", "_type": "Value"}),
    ("score", {"dtype": "float64", "_type": "Value"}),
    ("int_score", {"dtype": "int64", "_type": "Value"}),
]


def text_of(row_idx, doc_bytes):
    """Row row_idx's document: words chosen by the index, about doc_bytes long (varying by row)."""
    target = max(1, doc_bytes // 2 + (row_idx * 37) % max(1, doc_bytes))
    words = []
    n = 0
    k = 0
    while n < target:
        w = WORDS[(row_idx * 7 + k * 3 + (k * k) % 5) % len(WORDS)]
        words.append(w)
        n += len(w) + 1
        k += 1
    return " ".join(words)


class HfDatasets(Provider):
    name = "hf_datasets"
    extra_config_keys = {"splits", "require_token", "changes"}
    extra_fault_kinds = {"truncated_cells", "wrong_row_idx", "huge_answer", "text_not_string"}

    def reset(self):
        self.emu.config.setdefault("splits", [dict(s) for s in DEFAULT_SPLITS])
        self.emu.config.setdefault("require_token", False)
        self.emu.config["changes"] = []
        self.rows_answered = 0

    def _apply_changes(self):
        """The changes due after the requests answered so far, each once (under the emulator's lock:
        handle runs there)."""
        pending = []
        for c in self.emu.config.get("changes") or []:
            if not isinstance(c, dict) or not isinstance(c.get("after_requests"), int):
                raise ValueError('each change needs an integer "after_requests"')
            if c["after_requests"] > self.rows_answered:
                pending.append(c)
                continue
            for s in self.emu.config.get("splits") or []:
                for key in ("num_rows", "doc_bytes"):
                    if key in c:
                        s[key] = int(c[key])
        self.emu.config["changes"] = pending

    def route(self, req):
        req.action = "get" if req.path == "/rows" else "other"

    def needs_auth(self, req):
        return bool(self.emu.config.get("require_token"))

    def auth_failure(self, req, given):
        return Response(401, {"error": NOT_ACCESSIBLE})

    def error_body(self, status, message):
        return {"error": message or "Unexpected error."}

    def on_fault_added(self, fault):
        if fault["kind"] == "truncated_cells" and not isinstance(fault.get("row"), int):
            raise ValueError("truncated_cells fault needs an integer row")
        if fault["kind"] == "huge_answer" and not isinstance(fault.get("bytes"), int):
            raise ValueError("huge_answer fault needs an integer bytes")

    def _split(self, dataset, config, split):
        for s in self.emu.config.get("splits") or []:
            if s.get("dataset") == dataset and s.get("config") == config and s.get("split") == split:
                return s
        return None

    def handle(self, req, fired):
        if req.path != "/rows" or req.method != "GET":
            return Response(404, {"error": "Not Found"})
        dataset, config, split = req.q("dataset"), req.q("config"), req.q("split")
        if not dataset or not config or not split:
            return Response(422, {"error": "Parameter 'dataset', 'config' and 'split' are required"})
        try:
            offset = int(req.q("offset", "0"))
            length = int(req.q("length", "100"))
        except ValueError:
            return Response(422, {"error": "Parameters 'offset' and 'length' must be integers"})
        if offset < 0:
            return Response(422, {"error": "Parameter 'offset' must be positive"})
        if length < 1 or length > 100:
            return Response(422, {"error": "Parameter 'length' must not be greater than 100"})
        self._apply_changes()
        self.rows_answered += 1
        if not any(s.get("dataset") == dataset for s in self.emu.config.get("splits") or []):
            return Response(404, {"error": NOT_ACCESSIBLE})
        s = self._split(dataset, config, split)
        if s is None:
            return Response(404, {"error": "Not found."})
        total = int(s.get("num_rows", 0))
        doc_bytes = int(s.get("doc_bytes", 300))
        kinds = {f["kind"]: f for f in fired}
        rows = []
        for i in range(offset, min(total, offset + length)):
            text = text_of(i, doc_bytes)
            item = {"row_idx": i + (1 if "wrong_row_idx" in kinds else 0), "row": {
                "text": text,
                "id": "<urn:uuid:%08d-0000-0000-0000-000000000000>" % i,
                "dump": "CC-MAIN-2013-20",
                "url": "http://example.org/doc/%d" % i,
                "file_path": "s3://commoncrawl/crawl-data/CC-MAIN-2013-20/segments/%d.warc.gz" % (i // 100),
                "language": "en",
                "language_score": 0.97,
                "token_count": len(text) // 4,
                "score": 3.1,
                "int_score": 3,
            }, "truncated_cells": []}
            t = kinds.get("truncated_cells")
            if t is not None and t["row"] == i:
                item["row"]["text"] = text[:100]
                item["truncated_cells"] = ["text"]
            rows.append(item)
        if rows and "text_not_string" in kinds:
            rows[0]["row"]["text"] = 12345
        if rows and "huge_answer" in kinds:
            rows[0]["row"]["padding"] = "x" * kinds["huge_answer"]["bytes"]
        features = [{"feature_idx": k, "name": name, "type": t} for k, (name, t) in enumerate(FEATURES)]
        return Response(200, {"features": features, "rows": rows, "num_rows_total": total,
                              "num_rows_per_page": 100, "partial": False})
