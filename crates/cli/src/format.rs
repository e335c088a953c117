//! `--format` output as Docker gives it: Go templates (`{{.Field}}`, `{{json .}}`,
//! `{{range}}`, ...) with Docker's extra functions, with or without the `table`
//! prefix, and JSON lines.

use std::io::Write;

use anyhow::{anyhow, Context as _};
use gotmpl::{MissingKey, Template, TemplateError, Value};

use crate::table::Table;

/// A `--format` template run as Docker's CLI runs one: Go's text/template (the
/// gotmpl crate), a field the data lacks an error, plus Docker's functions
/// `json`, `join`, `split`, `lower`, `upper`, `title`, `pad` and `truncate`.
pub(crate) struct GoTemplate(Template);

impl GoTemplate {
    /// Parse `text` (as given: `\t` and `\n` escapes are the caller's business).
    pub(crate) fn parse(text: &str) -> anyhow::Result<GoTemplate> {
        let template = Template::new("")
            .missing_key(MissingKey::Error)
            .func("json", |a| {
                Ok(Value::from(to_json(arg(a, 0, "json")?).to_string()))
            })
            .func("join", |a| {
                let sep = string_arg(a, 1, "join")?;
                let items: Vec<String> = match arg(a, 0, "join")? {
                    Value::List(items) => items.iter().map(ToString::to_string).collect(),
                    Value::Nil => Vec::new(),
                    other => vec![other.to_string()],
                };
                Ok(Value::from(items.join(&sep)))
            })
            .func("split", |a| {
                let (text, sep) = (string_arg(a, 0, "split")?, string_arg(a, 1, "split")?);
                let parts: Vec<Value> = text.split(sep.as_str()).map(Value::from).collect();
                Ok(Value::List(parts.into()))
            })
            .func("lower", |a| {
                Ok(Value::from(string_arg(a, 0, "lower")?.to_lowercase()))
            })
            .func("upper", |a| {
                Ok(Value::from(string_arg(a, 0, "upper")?.to_uppercase()))
            })
            .func("title", |a| {
                Ok(Value::from(title(&string_arg(a, 0, "title")?)))
            })
            .func("pad", |a| {
                let text = string_arg(a, 0, "pad")?;
                let (before, after) = (count_arg(a, 1, "pad")?, count_arg(a, 2, "pad")?);
                Ok(Value::from(format!(
                    "{}{text}{}",
                    " ".repeat(before),
                    " ".repeat(after)
                )))
            })
            .func("truncate", |a| {
                let text = string_arg(a, 0, "truncate")?;
                let n = count_arg(a, 1, "truncate")?;
                Ok(Value::from(text.chars().take(n).collect::<String>()))
            })
            .parse(text)
            .map_err(|e| anyhow!("template parsing error: {e}"))?;
        Ok(GoTemplate(template))
    }

    /// The template executed on `data`.
    pub(crate) fn render(&self, data: &serde_json::Value) -> anyhow::Result<String> {
        let data = gotmpl::to_value(data).context("template data")?;
        self.0
            .execute_to_string(&data)
            .map_err(|e| anyhow!("template: {e}"))
    }

    /// The template executed on string fields.
    fn render_fields(&self, fields: &[(&str, String)]) -> anyhow::Result<String> {
        self.render(&fields_json(fields))
    }
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> gotmpl::Result<&'a Value> {
    args.get(i).ok_or_else(|| TemplateError::ArgCount {
        name: name.to_string(),
        expected: i + 1,
        got: args.len(),
    })
}

fn string_arg(args: &[Value], i: usize, name: &str) -> gotmpl::Result<String> {
    Ok(arg(args, i, name)?.to_string())
}

fn count_arg(args: &[Value], i: usize, name: &str) -> gotmpl::Result<usize> {
    arg(args, i, name)?
        .as_int()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| TemplateError::Exec(format!("{name}: argument {} must be a count", i + 1)))
}

/// Go's `strings.Title`: each word's first letter in capitals.
fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start = true;
    for c in text.chars() {
        if word_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        word_start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    out
}

/// A template value as JSON, for `{{json ...}}`.
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(n) => (*n).into(),
        Value::Uint(n) => (*n).into(),
        Value::Float(f) => (*f).into(),
        Value::String(s) => s.to_string().into(),
        Value::List(items) => items.iter().map(to_json).collect(),
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| (k.to_string(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// String fields as one JSON object.
fn fields_json(fields: &[(&str, String)]) -> serde_json::Value {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Docker's list formats take `\t` and `\n` as tab and newline.
fn expand_escapes(fmt: &str) -> String {
    fmt.replace("\\t", "\t").replace("\\n", "\n")
}

/// The fields as one JSON object on a line.
pub(crate) fn json_line(fields: &[(&str, String)]) -> String {
    fields_json(fields).to_string()
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
pub(crate) struct Templated {
    template: GoTemplate,
    table: Option<Table>,
}

impl Templated {
    /// For `format` (a template, `table` prefix or not) over rows with these
    /// `fields`; `names` overrides column names (`("ID", "CONTAINER ID")`).
    pub(crate) fn new(
        format: &str,
        fields: &[&str],
        names: &[(&str, &str)],
    ) -> anyhow::Result<Templated> {
        let format = expand_escapes(format);
        let Some(body) = format
            .strip_prefix("table")
            .filter(|b| b.starts_with([' ', '\t']))
        else {
            return Ok(Templated {
                template: GoTemplate::parse(&format)?,
                table: None,
            });
        };
        let template = GoTemplate::parse(body.trim_start())?;
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
        let header = template.render_fields(&header)?;
        let cells: Vec<&str> = header.split('\t').collect();
        Ok(Templated {
            table: Some(Table::new(&cells)),
            template,
        })
    }

    /// One row: written now, or kept for the aligned table.
    pub(crate) fn row(
        &mut self,
        out: &mut dyn Write,
        fields: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let line = self.template.render_fields(fields)?;
        match self.table.as_mut() {
            Some(t) => t.row(line.split('\t').map(String::from).collect()),
            None => writeln!(out, "{line}")?,
        }
        Ok(())
    }

    /// Write the table, if this is one.
    pub(crate) fn finish(self, out: &mut dyn Write) -> std::io::Result<()> {
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
        )
        .unwrap();
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

    fn go(template: &str, data: serde_json::Value) -> anyhow::Result<String> {
        GoTemplate::parse(template)?.render(&data)
    }

    #[test]
    fn go_templates_reach_into_nested_objects() {
        let data = serde_json::json!({
            "Name": "/web",
            "State": {"Pid": 42, "Running": true},
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"com.x": "y"}},
        });
        let cases = [
            ("{{.Name}} {{.State.Pid}}", "/web 42"),
            ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
            ("{{range .Config.Env}}{{.}};{{end}}", "A=1;B=2;"),
            (r#"{{index .Config.Labels "com.x"}}"#, "y"),
            ("{{json .Config.Env}}", r#"["A=1","B=2"]"#),
            ("{{json .State}}", r#"{"Pid":42,"Running":true}"#),
            (r#"{{join .Config.Env ","}}"#, "A=1,B=2"),
            ("{{len .Config.Env}}", "2"),
        ];
        for (template, want) in cases {
            assert_eq!(go(template, data.clone()).unwrap(), want, "{template}");
        }
    }

    #[test]
    fn go_templates_have_dockers_string_functions() {
        let data = serde_json::json!({"S": "hello world", "P": "a:b:c"});
        let cases = [
            ("{{upper .S}}", "HELLO WORLD"),
            ("{{lower (upper .S)}}", "hello world"),
            ("{{title .S}}", "Hello World"),
            ("{{truncate .S 5}}", "hello"),
            ("[{{pad .S 1 2}}]", "[ hello world  ]"),
            (r#"{{range split .P ":"}}<{{.}}>{{end}}"#, "<a><b><c>"),
            ("{{.S | upper}}", "HELLO WORLD"),
        ];
        for (template, want) in cases {
            assert_eq!(go(template, data.clone()).unwrap(), want, "{template}");
        }
    }

    #[test]
    fn go_template_mistakes_are_errors() {
        let data = serde_json::json!({"S": "x"});
        let err = go("{{.Missing}}", data.clone()).unwrap_err().to_string();
        assert!(err.contains("Missing"), "{err}");
        let err = go("{{.S", data.clone()).unwrap_err().to_string();
        assert!(err.starts_with("template parsing error"), "{err}");
        assert!(go("{{nosuchfunc .S}}", data.clone()).is_err());
        assert!(go("{{truncate .S}}", data).is_err());
    }
}
