// The one place that formats listings. A command builds rows (JSON objects whose keys carry their
// units: vram_gb, price_usd_per_hour, uptime_s) and a column list; Output renders them as an
// aligned table (default) or as JSON (--json) on stdout. Keys are stable and documented, so
// scripts can rely on them; the table view may abbreviate.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

namespace common {

class Error;

enum class OutputFormat { Table, Json };

struct Column {
    std::string key;     // JSON key in each row
    std::string header;  // table header ("PRICE $/H")
};

class Output {
public:
    explicit Output(OutputFormat format);
    Output(OutputFormat format, std::ostream & out);

    OutputFormat format() const { return format_; }
    bool json() const { return format_ == OutputFormat::Json; }

    // A listing: JSON array of the rows (all keys), or a table of the named columns.
    void rows(const std::vector<Column> & columns, const nlohmann::json & rows) const;
    // One object: JSON object, or "key: value" lines.
    void object(const nlohmann::json & object) const;
    // A plain message for humans; in JSON mode it is not printed (use object() for data).
    void text(std::string_view line) const;

private:
    OutputFormat format_;
    std::ostream * out_;
};

// Renders a JSON scalar for a table cell: strings bare, null as "-", doubles with up to 3 decimals.
std::string cell_text(const nlohmann::json & value);

// Prints an error once on stderr, "<program>: <message>" or, in JSON mode, one object
// {"error": {"kind": ..., "message": ..., <context>...}}. Returns the exit code for the kind.
int report_error(const Error & error, bool json);

}  // namespace common
