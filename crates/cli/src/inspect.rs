//! `inspect` of every kind of object (`inspect`, `container|image|volume|network
//! inspect`): Docker's JSON array, or `--format` run on each object.

use clap::Args;

use crate::format::GoTemplate;

/// The arguments every `inspect` takes.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Names or ids.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// `json` (the default), or a Go template run on each object, as
    /// `{{.State.Pid}}` or `{{json .Config}}`.
    #[arg(short, long)]
    pub format: Option<String>,
}

/// Print what `find` gives for each of `args.names`: one JSON array of them, or
/// the template's output for each on a line. As Docker, a name `find` fails on
/// is reported on a line of its own after the others are printed; the exit
/// code is then 125 (0 when all were found).
pub fn print(
    args: &InspectArgs,
    mut find: impl FnMut(&str) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<i32> {
    let template = match args.format.as_deref() {
        None | Some("json") => None,
        Some(t) => Some(GoTemplate::parse(t)?),
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &args.names {
        match find(name) {
            Ok(v) => found.push(v),
            Err(e) => errors.push(e),
        }
    }
    match &template {
        None => println!("{}", serde_json::to_string_pretty(&found)?),
        Some(t) => {
            for v in &found {
                println!("{}", t.render(v)?);
            }
        }
    }
    for e in &errors {
        eprintln!("berth: {}", crate::runtime_cmd::one_line(e));
    }
    Ok(if errors.is_empty() { 0 } else { 125 })
}
