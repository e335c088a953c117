//! `--format` output as Docker gives it: Go-style templates (`{{.Field}}`), with or
//! without the `table` prefix, and JSON lines.

use std::io::{self, Write};

use crate::table::Table;

/// `fmt` with every `{{.Field}}` (or `{{ .Field }}`) replaced by its value and the
/// escapes `\t` and `\n` expanded.
pub(crate) fn template(fmt: &str, fields: &[(&str, String)]) -> String {
    let mut out = fmt.replace("\\t", "\t").replace("\\n", "\n");
    for (k, v) in fields {
        out = out.replace(&format!("{{{{.{k}}}}}"), v);
        out = out.replace(&format!("{{{{ .{k} }}}}"), v);
    }
    out
}

/// The fields as one JSON object on a line.
pub(crate) fn json_line(fields: &[(&str, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// A field's column name: its words in capitals (`CreatedAt` -> `CREATED AT`).
fn column_name(field: &str) -> String {
    let mut name = String::new();
    let mut prev_lower = false;
    for c in field.chars() {
        if c.is_uppercase() && prev_lower {
            name.push(' ');
        }
        prev_lower = c.is_lowercase();
        name.extend(c.to_uppercase());
    }
    name
}

/// Rows written through a user's template: `table TEMPLATE` gives a header row
/// (each field's column name) and aligns the tab-separated columns; a bare template
/// writes each row as it comes.
pub(crate) struct Templated<'a> {
    template: &'a str,
    table: Option<Table>,
}

impl<'a> Templated<'a> {
    /// For `format` (a template, `table` prefix or not) over rows with these
    /// `fields`; `names` overrides column names (`("ID", "CONTAINER ID")`).
    pub(crate) fn new(format: &'a str, fields: &[&str], names: &[(&str, &str)]) -> Templated<'a> {
        let Some(body) = format
            .strip_prefix("table")
            .filter(|b| b.starts_with([' ', '\t']))
        else {
            return Templated {
                template: format,
                table: None,
            };
        };
        let body = body.trim_start();
        let header: Vec<(&str, String)> = fields
            .iter()
            .map(|f| {
                let name = names
                    .iter()
                    .find(|(k, _)| k == f)
                    .map(|(_, n)| n.to_string());
                (*f, name.unwrap_or_else(|| column_name(f)))
            })
            .collect();
        let cells: Vec<String> = template(body, &header)
            .split('\t')
            .map(String::from)
            .collect();
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        Templated {
            template: body,
            table: Some(Table::new(&cells)),
        }
    }

    /// One row: written now, or kept for the aligned table.
    pub(crate) fn row(&mut self, out: &mut dyn Write, fields: &[(&str, String)]) -> io::Result<()> {
        let line = template(self.template, fields);
        match self.table.as_mut() {
            Some(t) => {
                t.row(line.split('\t').map(String::from).collect());
                Ok(())
            }
            None => writeln!(out, "{line}"),
        }
    }

    /// Write the table, if this is one.
    pub(crate) fn finish(self, out: &mut dyn Write) -> io::Result<()> {
        match self.table {
            Some(t) => t.write(out),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: &str) -> String {
        let mut out = Vec::new();
        let mut t = Templated::new(
            format,
            &["ID", "CreatedAt", "Names"],
            &[("ID", "CONTAINER ID")],
        );
        for (id, name) in [("abc", "web"), ("de", "a-longer-name")] {
            let fields = [
                ("ID", id.to_string()),
                ("CreatedAt", "now".to_string()),
                ("Names", name.to_string()),
            ];
            t.row(&mut out, &fields).unwrap();
        }
        t.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bare_templates_write_a_line_per_row() {
        assert_eq!(
            render("{{.Names}}:{{ .ID }}"),
            "web:abc\na-longer-name:de\n"
        );
    }

    #[test]
    fn table_templates_get_a_header_and_aligned_columns() {
        assert_eq!(
            render("table {{.ID}}\\t{{.Names}}\\t{{.CreatedAt}}"),
            "CONTAINER ID   NAMES           CREATED AT\n\
             abc            web             now\n\
             de             a-longer-name   now\n"
        );
    }
}
