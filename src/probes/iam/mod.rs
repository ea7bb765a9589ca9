//! The `iam` probe: does the backup user's policy allow what the backup job does — s3:PutObject
//! and s3:GetObject on the objects under the prefix, s3:ListBucket on the bucket (runbook:
//! `aws iam get-user-policy --user-name postgres-backup-user --policy-name postgres-backup-policy`).
//!
//! IAM is read with the service's own credentials. AWS's policy simulator answers first when it
//! can (it sees every policy of the user); where it is unavailable (S3-compatible stacks, moto,
//! a denied `iam:SimulatePrincipalPolicy`) the probe evaluates the inline policy document itself
//! ([`evaluate`]): explicit Deny wins, then Allow, else implicit deny; a statement with a
//! Condition is reported as uncertain, never as allowed.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use serde_json::{json, Value};

mod evaluate;

pub use evaluate::{
    evaluate, parse_document, required_actions, wildcard_match, Decision, PolicyError, Verdict,
};

use super::{Probe, ProbeContext, ProbeOutput, Signal};
use crate::infra::aws::{self, FailureKind};

/// Checks the backup user's IAM policy.
pub struct Iam;

impl Probe for Iam {
    fn name(&self) -> &'static str {
        "iam"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let settings = ctx.settings.clone();
            let bucket = if !settings.s3.bucket.is_empty() {
                settings.s3.bucket.clone()
            } else {
                match ctx.backup_secret().await {
                    Ok(s) => match &s.s3_bucket {
                        Some(b) => b.clone(),
                        None => return ProbeOutput::skipped("IAM not checked: no bucket in [s3] bucket or the Secret"),
                    },
                    Err(e) => {
                        return ProbeOutput::skipped(format!(
                            "IAM not checked: no [s3] bucket configured and the backup Secret is unavailable ({e})"
                        ))
                    }
                }
            };
            let client = ctx.iam_client().await;
            check(
                &client,
                &settings.iam.user,
                &settings.iam.policy,
                &bucket,
                &settings.s3.prefix,
            )
            .await
        })
    }
}

/// The probe's work with a given IAM client: reads `user`'s inline `policy` and decides each of
/// [`required_actions`] on `bucket`/`prefix`.
pub async fn check(
    client: &aws_sdk_iam::Client,
    user: &str,
    policy: &str,
    bucket: &str,
    prefix: &str,
) -> ProbeOutput {
    let required = required_actions(bucket, prefix);
    let (got_user, got_policy) = tokio::join!(
        client.get_user().user_name(user).send(),
        client
            .get_user_policy()
            .user_name(user)
            .policy_name(policy)
            .send()
    );
    let mut evidence = json!({ "user": user, "policy": policy });
    let user_arn = got_user
        .as_ref()
        .ok()
        .and_then(|u| u.user())
        .map(|u| u.arn().to_owned());
    evidence["user_arn"] = json!(user_arn);

    let raw = match got_policy {
        Ok(out) => out.policy_document().to_owned(),
        Err(e) => {
            let f = aws::explain("IAM", &e);
            evidence["error"] = json!({ "code": f.code, "error": f.words });
            return match f.kind {
                FailureKind::NotFound => {
                    let why = match &got_user {
                        Err(e) if aws::explain("IAM", e).kind == FailureKind::NotFound => {
                            format!("IAM user {user} does not exist")
                        }
                        _ => format!("IAM user {user} has no inline policy {policy}"),
                    };
                    let signals = required
                        .iter()
                        .map(|(a, r)| Signal::IamActionDenied { action: (*a).to_owned(), resource: r.clone() })
                        .collect();
                    evidence["method"] = json!("none: there is no policy to evaluate");
                    ProbeOutput::problem(format!("{why}: the backup job is allowed none of the S3 actions it needs"), signals)
                        .with_evidence(evidence)
                }
                FailureKind::AccessDenied | FailureKind::Forbidden => ProbeOutput::error(format!(
                    "the service's own AWS credentials may not read the policy (iam:GetUserPolicy: {})",
                    f.words
                ))
                .with_evidence(evidence),
                FailureKind::InvalidAccessKeyId | FailureKind::SignatureDoesNotMatch => {
                    ProbeOutput::error(format!("IAM refuses the service's own AWS credentials: {}", f.words))
                        .with_evidence(evidence)
                }
                _ => ProbeOutput::error(f.words).with_evidence(evidence),
            };
        }
    };

    let document = parse_document(&raw);
    if let Ok(d) = &document {
        evidence["document"] = d.clone();
    }
    let simulated = match &user_arn {
        Some(arn) => simulate(client, arn, &required).await,
        None => Err("the user's ARN is unknown (GetUser failed)".to_owned()),
    };
    let verdicts = match simulated {
        Ok(v) => {
            evidence["method"] = json!("simulation");
            evidence["scope"] = json!("every policy of the user (AWS policy simulator)");
            v
        }
        Err(why) => {
            evidence["simulation"] = json!({ "used": false, "why": why });
            evidence["method"] = json!("document");
            evidence["scope"] = json!(format!(
                "the inline policy {policy} only (attached and group policies not read)"
            ));
            let document = match document {
                Ok(d) => d,
                Err(e) => {
                    return ProbeOutput::error(format!(
                        "policy {policy} of {user} cannot be evaluated: {e}"
                    ))
                    .with_evidence(evidence)
                }
            };
            let mut verdicts = Vec::new();
            for (action, resource) in &required {
                match evaluate(&document, action, resource) {
                    Ok(v) => verdicts.push(v),
                    Err(e) => {
                        return ProbeOutput::error(format!(
                            "policy {policy} of {user} cannot be evaluated: {e}"
                        ))
                        .with_evidence(evidence)
                    }
                }
            }
            verdicts
        }
    };
    evidence["decisions"] = json!(verdicts);
    summarize(user, policy, &verdicts, evidence)
}

fn summarize(user: &str, policy: &str, verdicts: &[Verdict], evidence: Value) -> ProbeOutput {
    let denied: Vec<&Verdict> = verdicts.iter().filter(|v| v.decision.is_denied()).collect();
    let uncertain: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.decision == Decision::Uncertain)
        .collect();
    let uncertain_words = uncertain
        .iter()
        .map(|v| format!("{} is uncertain: {}", v.action, v.why))
        .collect::<Vec<_>>();
    if !denied.is_empty() {
        let mut parts: Vec<String> = denied
            .iter()
            .map(|v| format!("{} on {} is denied: {}", v.action, v.resource, v.why))
            .collect();
        parts.extend(uncertain_words);
        let signals = denied
            .iter()
            .map(|v| Signal::IamActionDenied {
                action: v.action.clone(),
                resource: v.resource.clone(),
            })
            .collect();
        return ProbeOutput::problem(
            format!("Policy {policy} of IAM user {user}: {}", parts.join("; ")),
            signals,
        )
        .with_evidence(evidence);
    }
    let allowed = verdicts
        .iter()
        .filter(|v| v.decision == Decision::Allowed)
        .map(|v| v.action.as_str())
        .collect::<Vec<_>>();
    let mut summary = format!(
        "Policy {policy} of IAM user {user} allows {}",
        allowed.join(", ")
    );
    if allowed.is_empty() {
        summary =
            format!("Policy {policy} of IAM user {user} allows none of the actions for certain");
    }
    if !uncertain_words.is_empty() {
        summary = format!("{summary}; {}", uncertain_words.join("; "));
    }
    ProbeOutput::ok(summary).with_evidence(evidence)
}

/// Asks AWS's policy simulator. Any failure (moto answers 500, the service may lack
/// iam:SimulatePrincipalPolicy) is returned as words for the evidence, and the caller falls back.
async fn simulate(
    client: &aws_sdk_iam::Client,
    arn: &str,
    required: &[(&'static str, String)],
) -> Result<Vec<Verdict>, String> {
    // The simulation is optional: no retries, so that a broken simulator costs one round trip.
    let once = || {
        aws_sdk_iam::config::Builder::default()
            .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled())
    };
    let calls = required.iter().map(|(action, resource)| {
        client
            .simulate_principal_policy()
            .policy_source_arn(arn)
            .action_names(*action)
            .resource_arns(resource.clone())
            .customize()
            .config_override(once())
            .send()
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut verdicts = Vec::new();
    for ((action, resource), answer) in required.iter().zip(answers) {
        let out = answer.map_err(|e| aws::explain("IAM", &e).words)?;
        let result = out
            .evaluation_results()
            .iter()
            .find(|r| r.eval_action_name().eq_ignore_ascii_case(action))
            .ok_or_else(|| format!("the simulator returned no result for {action}"))?;
        let statement = result.matched_statements().first().map(|s| {
            let at = s
                .start_position()
                .map(|p| format!(" at line {} column {}", p.line(), p.column()))
                .unwrap_or_default();
            format!("policy {}{at}", s.source_policy_id().unwrap_or("?"))
        });
        let missing = result.missing_context_values();
        use aws_sdk_iam::types::PolicyEvaluationDecisionType as D;
        let (decision, why) = match result.eval_decision() {
            D::Allowed => (
                Decision::Allowed,
                format!("{} allows it", statement.as_deref().unwrap_or("a policy")),
            ),
            D::ExplicitDeny => (
                Decision::ExplicitDeny,
                format!(
                    "{} denies it explicitly",
                    statement.as_deref().unwrap_or("a policy")
                ),
            ),
            D::ImplicitDeny if !missing.is_empty() => (
                Decision::Uncertain,
                format!(
                    "depends on condition keys the simulator was not given: {}",
                    missing.join(", ")
                ),
            ),
            _ => (Decision::ImplicitDeny, "no statement allows it".to_owned()),
        };
        verdicts.push(Verdict {
            action: (*action).to_owned(),
            resource: resource.clone(),
            decision,
            statement,
            why,
        });
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECTS: &str = "arn:aws:s3:::link-backups/postgres-backups/*";
    const BUCKET: &str = "arn:aws:s3:::link-backups";

    fn decide(doc: Value, action: &str, resource: &str) -> Verdict {
        evaluate(&doc, action, resource).unwrap()
    }

    #[test]
    fn wildcards_match_like_iam() {
        assert!(wildcard_match("s3:*", "s3:PutObject", true));
        assert!(wildcard_match("S3:put*", "s3:PutObject", true));
        assert!(wildcard_match("s3:?etObject", "s3:GetObject", true));
        assert!(!wildcard_match("s3:Get*", "s3:PutObject", true));
        assert!(wildcard_match(
            "arn:aws:s3:::link-backups/*",
            OBJECTS,
            false
        ));
        assert!(!wildcard_match(
            "arn:aws:s3:::link-backups/*",
            BUCKET,
            false
        ));
        assert!(
            !wildcard_match("arn:aws:s3:::LINK-backups/*", OBJECTS, false),
            "resources are case-sensitive"
        );
        assert!(wildcard_match("*", "", false));
        assert!(wildcard_match("a*b*c", "aXXbYYbc", false));
        assert!(!wildcard_match("a*b?c", "aXXbc", false));
    }

    #[test]
    fn an_allow_statement_in_string_or_array_form_allows() {
        let doc = json!({"Statement": {"Effect": "Allow", "Action": "s3:PutObject", "Resource": OBJECTS}});
        assert_eq!(
            decide(doc, "s3:PutObject", OBJECTS).decision,
            Decision::Allowed
        );
        let doc = json!({"Statement": [{"Sid": "Rw", "Effect": "Allow", "Action": ["s3:getobject", "s3:PutObject"], "Resource": ["arn:aws:s3:::link-backups/*"]}]});
        let v = decide(doc, "s3:GetObject", OBJECTS);
        assert_eq!(
            (v.decision, v.statement.as_deref()),
            (Decision::Allowed, Some("statement 1 (Sid Rw)"))
        );
    }

    #[test]
    fn an_explicit_deny_wins_over_any_allow() {
        let doc = json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "NoWrites", "Effect": "Deny", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::link-backups/*"}
        ]});
        let v = decide(doc.clone(), "s3:PutObject", OBJECTS);
        assert_eq!(v.decision, Decision::ExplicitDeny);
        assert_eq!(v.statement.as_deref(), Some("statement 2 (Sid NoWrites)"));
        assert_eq!(
            decide(doc, "s3:ListBucket", BUCKET).decision,
            Decision::Allowed
        );
    }

    #[test]
    fn nothing_matching_is_an_implicit_deny() {
        let doc = json!({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": OBJECTS}]});
        let v = decide(doc.clone(), "s3:PutObject", OBJECTS);
        assert_eq!((v.decision, v.statement), (Decision::ImplicitDeny, None));
        assert_eq!(
            decide(doc, "s3:ListBucket", BUCKET).decision,
            Decision::ImplicitDeny,
            "object ARN does not cover the bucket"
        );
    }

    #[test]
    fn not_action_and_not_resource_match_everything_else() {
        let doc = json!({"Statement": [
            {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:*", "NotResource": ["arn:aws:s3:::link-backups", "arn:aws:s3:::link-backups/*"]}
        ]});
        assert_eq!(
            decide(doc.clone(), "s3:PutObject", OBJECTS).decision,
            Decision::Allowed
        );
        assert_eq!(
            decide(doc.clone(), "s3:PutObject", "arn:aws:s3:::elsewhere/x").decision,
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(doc, "iam:GetUser", "*").decision,
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn a_condition_makes_the_answer_uncertain_never_allowed() {
        let cond = json!({"StringEquals": {"aws:SourceVpc": "vpc-1"}});
        let doc = json!({"Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": OBJECTS, "Condition": cond}]});
        assert_eq!(
            decide(doc, "s3:PutObject", OBJECTS).decision,
            Decision::Uncertain
        );
        let doc = json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*", "Condition": cond}
        ]});
        assert_eq!(
            decide(doc, "s3:PutObject", OBJECTS).decision,
            Decision::Uncertain
        );
    }

    #[test]
    fn documents_as_iam_returns_them_are_decoded() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3A%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
        let doc = parse_document(encoded).unwrap();
        assert_eq!(
            decide(doc, "s3:ListBucket", BUCKET).decision,
            Decision::Allowed
        );
        assert!(parse_document("{\"Statement\": []}").is_ok());
        assert!(matches!(
            parse_document("%7Bnot json"),
            Err(PolicyError::NotJson(_))
        ));
        assert_eq!(
            evaluate(&json!({}), "s3:X", "*"),
            Err(PolicyError::NoStatement)
        );
        assert_eq!(
            evaluate(
                &json!({"Statement": [{"Action": "*", "Resource": "*"}]}),
                "s3:X",
                "*"
            ),
            Err(PolicyError::BadEffect(1))
        );
    }
}
