//! Stage planning tests.

use std::collections::BTreeMap;

use berth_builder::{parse, plan, PlanError, StageRef};

const MULTI: &str = "\
ARG GO=1.22
FROM golang:${GO} AS build
RUN go build -o /out/app
FROM alpine AS tools
RUN apk add curl
FROM build AS test
RUN go test
FROM scratch AS unused
COPY --from=tools /usr/bin/curl /
FROM alpine
COPY --from=build /out/app /app
RUN --mount=type=bind,from=tools,source=/usr/bin,target=/t ls /t
";

fn needed(target: Option<&str>) -> Vec<usize> {
    plan(&parse(MULTI).unwrap(), target, &BTreeMap::new())
        .unwrap()
        .needed
}

#[test]
fn stages_and_refs() {
    let p = plan(&parse(MULTI).unwrap(), None, &BTreeMap::new()).unwrap();
    assert_eq!(p.stages.len(), 5);
    assert_eq!(p.stages[0].name.as_deref(), Some("build"));
    assert_eq!(p.stages[0].base, StageRef::Image("golang:1.22".into()));
    assert_eq!(p.stages[2].base, StageRef::Stage(0));
    assert_eq!(p.stages[3].deps, vec![1]);
    assert_eq!(p.stages[4].deps, vec![0, 1]);
    assert_eq!(p.stages[4].nodes.len(), 2);
    assert_eq!(p.target, 4);
}

#[test]
fn default_target_is_last_and_unused_stages_skipped() {
    assert_eq!(needed(None), vec![0, 1, 4]);
}

#[test]
fn target_selects_closure() {
    assert_eq!(needed(Some("build")), vec![0]);
    assert_eq!(needed(Some("test")), vec![0, 2]);
    assert_eq!(needed(Some("unused")), vec![1, 3]);
    assert_eq!(
        needed(Some("TOOLS")),
        vec![1],
        "stage names are case-insensitive"
    );
    assert_eq!(needed(Some("2")), vec![0, 2]);
}

#[test]
fn build_arg_changes_from() {
    let ba = BTreeMap::from([("GO".to_string(), "1.23".to_string())]);
    let p = plan(&parse(MULTI).unwrap(), None, &ba).unwrap();
    assert_eq!(p.stages[0].base, StageRef::Image("golang:1.23".into()));
}

#[test]
fn copy_from_index_and_image() {
    let src = "FROM a\nFROM b\nCOPY --from=0 /x /x\nCOPY --from=nginx:latest /etc/nginx /n\n";
    let p = plan(&parse(src).unwrap(), None, &BTreeMap::new()).unwrap();
    assert_eq!(p.stages[1].deps, vec![0]);
    assert_eq!(p.needed, vec![0, 1]);
}

#[test]
fn errors() {
    let e = plan(&parse(MULTI).unwrap(), Some("nope"), &BTreeMap::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "target stage \"nope\" not found (stages: build, tools, test, unused, 4)"
    );
    let e = plan(
        &parse("FROM a\nCOPY --from=0 a b\n").unwrap(),
        None,
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:2:1: COPY --from refers to stage 0, which is not a previous stage"
    );
    let e = plan(&parse("FROM a AS 9bad\n").unwrap(), None, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(e, PlanError::InvalidStageName { line: 1, .. }),
        "{e}"
    );
    let e = plan(&parse("FROM ${X:?}\n").unwrap(), None, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:1:1: X: is not allowed to be unset or empty"
    );
}
