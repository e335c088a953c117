//! Multi-stage planning: stages, `--target`, and which stages are needed.

use std::collections::BTreeMap;

use crate::expand::ExpandError;
use crate::parse::{Dockerfile, Instruction, Node};
use crate::scope::GlobalArgs;

/// A planning error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `--target` names no stage.
    #[error("target stage \"{0}\" not found (stages: {1})")]
    UnknownTarget(String, String),
    /// A stage name Docker would reject.
    #[error("{file}:{line}:{column}: invalid stage name \"{name}\" (use letters, digits, '-', '_' and '.', starting with a letter)")]
    InvalidStageName {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// Column.
        column: usize,
        /// The name.
        name: String,
    },
    /// `COPY --from=N` / mount `from=N` pointing at this or a later stage.
    #[error(
        "{file}:{line}:{column}: {what} refers to stage {index}, which is not a previous stage"
    )]
    ForwardReference {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// Column.
        column: usize,
        /// `COPY --from` or `RUN --mount from`.
        what: String,
        /// The index given.
        index: usize,
    },
    /// A variable expansion failed in FROM.
    #[error("{file}:{line}:{column}: {err}")]
    Expand {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// Column.
        column: usize,
        /// The cause.
        err: ExpandError,
    },
}

/// Where a stage's base or a copy source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageRef {
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference (or `scratch`).
    Image(String),
}

/// One build stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// 0-based index.
    pub index: usize,
    /// `AS name`, lower-cased as Docker does.
    pub name: Option<String>,
    /// The FROM, expanded with the global ARGs.
    pub base: StageRef,
    /// `--platform` (expanded), if given.
    pub platform: Option<String>,
    /// The FROM node.
    pub from: Node,
    /// The instructions after FROM.
    pub nodes: Vec<Node>,
    /// Earlier stages this stage uses (base, `COPY --from`, `RUN --mount from=`), sorted.
    pub deps: Vec<usize>,
}

/// The build plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The ARGs before the first FROM.
    pub global_args: GlobalArgs,
    /// All stages, in file order.
    pub stages: Vec<Stage>,
    /// The target stage (the last one unless `--target`).
    pub target: usize,
    /// The stages to build, in order: the target and all it depends on.
    pub needed: Vec<usize>,
}

fn valid_stage_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_lowercase())
        && c.all(|ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '_' | '.')
        })
}

/// Splits `df` into stages, resolves stage references and selects the stages
/// needed for `target` (a stage name or index; default: the last stage).
pub fn plan(
    df: &Dockerfile,
    target: Option<&str>,
    build_args: &BTreeMap<String, String>,
) -> Result<Plan, PlanError> {
    let global_args =
        GlobalArgs::from_dockerfile(df, build_args).map_err(|err| PlanError::Expand {
            file: df.file.clone(),
            line: 1,
            column: 1,
            err,
        })?;
    let mut stages: Vec<Stage> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let loc = |n: &Node| (df.file.clone(), n.span.line, n.span.column);
    for node in &df.nodes {
        match &node.instruction {
            Instruction::From {
                image,
                name,
                platform,
            } => {
                let index = stages.len();
                let expand_err = |err| {
                    let (file, line, column) = loc(node);
                    PlanError::Expand {
                        file,
                        line,
                        column,
                        err,
                    }
                };
                let image = global_args.expand(image, df.escape).map_err(expand_err)?;
                let platform = platform
                    .as_deref()
                    .map(|p| global_args.expand(p, df.escape))
                    .transpose()
                    .map_err(expand_err)?;
                let name = name.as_ref().map(|n| n.to_lowercase());
                if let Some(n) = &name {
                    if !valid_stage_name(n) {
                        let (file, line, column) = loc(node);
                        return Err(PlanError::InvalidStageName {
                            file,
                            line,
                            column,
                            name: n.clone(),
                        });
                    }
                }
                let base = match names.get(&image.to_lowercase()) {
                    Some(&i) => StageRef::Stage(i),
                    None => StageRef::Image(image),
                };
                let mut deps = Vec::new();
                if let StageRef::Stage(i) = base {
                    deps.push(i);
                }
                if let Some(n) = &name {
                    names.insert(n.clone(), index);
                }
                stages.push(Stage {
                    index,
                    name,
                    base,
                    platform,
                    from: node.clone(),
                    nodes: Vec::new(),
                    deps,
                });
            }
            _ => {
                let Some(stage) = stages.last_mut() else {
                    continue;
                };
                let index = stage.index;
                let mut refs: Vec<(&str, String)> = Vec::new();
                match &node.instruction {
                    Instruction::Copy(a) => {
                        refs.extend(a.from.iter().map(|f| ("COPY --from", f.clone())))
                    }
                    Instruction::Run { mounts, .. } => {
                        refs.extend(
                            mounts
                                .iter()
                                .filter_map(|m| m.field("from"))
                                .map(|f| ("RUN --mount from", f.to_string())),
                        );
                    }
                    _ => {}
                }
                for (what, r) in refs {
                    // Variables in --from are expanded with the global ARGs here;
                    // the executor expands them in the stage scope.
                    let r = global_args.expand(&r, df.escape).unwrap_or(r);
                    let dep = if let Ok(i) = r.parse::<usize>() {
                        if i >= index {
                            let (file, line, column) = loc(node);
                            return Err(PlanError::ForwardReference {
                                file,
                                line,
                                column,
                                what: what.into(),
                                index: i,
                            });
                        }
                        Some(i)
                    } else {
                        names.get(&r.to_lowercase()).copied()
                    };
                    if let Some(i) = dep {
                        if !stage.deps.contains(&i) {
                            stage.deps.push(i);
                        }
                    }
                }
                stage.deps.sort_unstable();
                stage.nodes.push(node.clone());
            }
        }
    }
    let target = match target {
        None => stages.len().saturating_sub(1),
        Some(t) => match names.get(&t.to_lowercase()) {
            Some(&i) => i,
            None => match t.parse::<usize>() {
                Ok(i) if i < stages.len() => i,
                _ => {
                    let list = stages
                        .iter()
                        .map(|s| s.name.clone().unwrap_or_else(|| s.index.to_string()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(PlanError::UnknownTarget(t.to_string(), list));
                }
            },
        },
    };
    let mut needed = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if let Some(slot) = needed.get_mut(i) {
            if !*slot {
                *slot = true;
                todo.extend(stages[i].deps.iter().copied());
            }
        }
    }
    let needed = needed
        .iter()
        .enumerate()
        .filter(|(_, n)| **n)
        .map(|(i, _)| i)
        .collect();
    Ok(Plan {
        global_args,
        stages,
        target,
        needed,
    })
}
