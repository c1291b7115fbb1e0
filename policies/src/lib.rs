//! Least-privilege IAM for the pipeline's functions: each function declares what it touches,
//! and this crate turns that into an exact policy document and an allow/deny matrix that
//! proves it (offline here, against the deployed roles in the smoke test).

pub mod access;
pub mod arn;
pub mod document;
pub mod eval;
pub mod matrix;

pub use access::{Access, FunctionAccess, Request};
pub use arn::{ArnTemplate, Bindings, Part};
pub use document::{Action, Condition, Effect, PolicyDocument, Principal, Statement};
pub use eval::{Context, Decision, evaluate, evaluate_bounded, evaluate_in};
pub use matrix::{Check, Expect, Violation, matrix, violations};

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> ArnTemplate {
        ArnTemplate::arn("s3", false, false, vec![Part::Ref("Bucket".into())])
    }

    fn table() -> ArnTemplate {
        ArnTemplate::arn(
            "dynamodb",
            true,
            true,
            vec![Part::Lit("table/images".into())],
        )
    }

    fn app() -> Vec<FunctionAccess> {
        vec![
            FunctionAccess {
                name: "writer".into(),
                access: vec![Access::S3Put {
                    bucket: bucket(),
                    prefix: "uploads/".into(),
                }],
            },
            FunctionAccess {
                name: "reader".into(),
                access: vec![Access::DynamoRead { table: table() }, Access::DetectLabels],
            },
        ]
    }

    fn bindings() -> Bindings {
        let mut b = Bindings::example("dev");
        b.refs.insert("Bucket".into(), "my-bucket".into());
        b
    }

    #[test]
    fn synthesized_policies_satisfy_their_matrix() {
        let app = app();
        for f in &app {
            let rows = matrix(f, &app);
            assert!(rows.iter().any(|r| r.expect == Expect::Allow), "{}", f.name);
            assert!(rows.iter().any(|r| r.expect == Expect::Deny), "{}", f.name);
            assert_eq!(violations(f, &app, &bindings()), Ok(vec![]), "{}", f.name);
        }
    }

    #[test]
    fn matrix_rows_cover_siblings_and_other_functions() {
        let app = app();
        let b = bindings();
        let rows: Vec<(String, String, Expect)> = matrix(&app[0], &app)
            .into_iter()
            .map(|c| {
                (
                    c.request.action.to_string(),
                    c.request.resource.resolve(&b).unwrap_or_default(),
                    c.expect,
                )
            })
            .collect();
        let has = |a: &str, r: &str, e: Expect| {
            rows.iter()
                .any(|(ra, rr, re)| ra == a && rr == r && *re == e)
        };
        let key = access::SAMPLE_OBJECT;
        assert!(has(
            "s3:PutObject",
            &format!("arn:aws:s3:::my-bucket/uploads/{key}"),
            Expect::Allow
        ));
        assert!(has(
            "s3:GetObject",
            &format!("arn:aws:s3:::my-bucket/uploads/{key}"),
            Expect::Deny
        ));
        assert!(has(
            "s3:PutObject",
            &format!("arn:aws:s3:::my-bucket/other/{key}"),
            Expect::Deny
        ));
        assert!(has(
            "s3:PutObject",
            &format!("arn:aws:s3:::my-bucket/{key}"),
            Expect::Deny
        ));
        assert!(has(
            "s3:PutObject",
            &format!("arn:aws:s3:::my-bucket/uploads-other/{key}"),
            Expect::Deny
        ));
        assert!(has(
            "s3:PutObject",
            &format!("arn:aws:s3:::my-bucket-other/uploads/{key}"),
            Expect::Deny
        ));
        assert!(has(
            "dynamodb:Scan",
            "arn:aws:dynamodb:us-east-1:123456789012:table/images",
            Expect::Deny
        ));
        assert!(has("rekognition:DetectLabels", "*", Expect::Deny));
        // No request appears twice, and none is both allowed and denied.
        let mut keys: Vec<_> = rows.iter().map(|(a, r, _)| (a, r)).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }

    #[test]
    fn an_over_broad_policy_is_caught() {
        let app = app();
        let mut broad = app[0]
            .policy()
            .resolve(&bindings())
            .unwrap_or_else(|e| panic!("{e}"));
        broad.statement[0].resource = vec!["arn:aws:s3:::my-bucket/*".into()];
        broad.statement[0]
            .action
            .push(Action::parse("s3:GetObject").unwrap_or_else(|e| panic!("{e}")));
        let b = bindings();
        let failing: Vec<_> = matrix(&app[0], &app)
            .into_iter()
            .filter(|c| {
                let r = c.request.resource.resolve(&b).unwrap_or_default();
                !c.expect
                    .holds(evaluate(&broad, c.request.action.as_str(), &r))
            })
            .map(|c| c.why)
            .collect();
        assert!(
            failing
                .iter()
                .any(|w| w == "another action on the same object")
        );
        assert!(
            failing
                .iter()
                .any(|w| w == "the same action under another prefix")
        );
        assert!(
            failing
                .iter()
                .any(|w| w == "the same action at the bucket root")
        );
    }

    #[test]
    fn star_only_where_no_resource_scoping_exists() {
        for f in app() {
            for s in f.policy().statement {
                if s.resource.iter().any(ArnTemplate::is_any) {
                    assert_eq!(
                        s.action,
                        vec![
                            Action::parse("rekognition:DetectLabels")
                                .unwrap_or_else(|e| panic!("{e}"))
                        ]
                    );
                }
            }
        }
    }
}
