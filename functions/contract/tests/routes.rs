//! The API's routes against the handlers: every route the app model gives a function is
//! answered by that function's handler, and no handler answers a route the model gives it
//! not. A route declared but not handled would deploy cleanly and answer 404; a route handled
//! but not declared would be dead code API Gateway never sends.

// Test code: fixtures and mocks are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use api_types::Route;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use lambda_runtime::{Context, LambdaEvent};
use policies::Bindings;
use stack::App;

fn env_of(function: &str) -> impl Fn(&str) -> Option<String> {
    let app = App::image_pipeline();
    let env = app
        .function(function)
        .unwrap()
        .resolved_env(&Bindings::example("dev"))
        .unwrap();
    // Known once deployed: the role a scoped function's user sessions are sessions of.
    move |k: &str| match k {
        "USER_ROLE_ARN" => Some(handler_shared::scope::testing::ROLE_ARN.to_string()),
        _ => env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
    }
}

/// An STS that gives every user a session.
fn sts() -> aws_sdk_sts::Client {
    handler_shared::scope::testing::sts(&[&handler_shared::scope::testing::assume_role(|_| true)])
}

/// A request for `route` as API Gateway sends it (path parameters filled in).
fn request(route: Route) -> ApiGatewayV2httpRequest {
    let id = "6f1c2a8e-4b7d-4c3e-9a51-0d2e8f7b6c45";
    let path = route.path().replace("{id}", id);
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../../upload/tests/data/post-upload.json")).unwrap();
    v["routeKey"] = route.key().into();
    v["requestContext"]["routeKey"] = route.key().into();
    v["rawPath"] = path.clone().into();
    v["requestContext"]["http"]["path"] = path.into();
    v["requestContext"]["http"]["method"] = route.method().into();
    if route.path().contains("{id}") {
        v["pathParameters"] = serde_json::json!({ "id": id });
    }
    serde_json::from_value(v).unwrap()
}

/// True when the handler said it has no such route (404 "no route" or 405), as opposed to
/// answering the request, successfully or not.
fn not_routed(resp: &ApiGatewayV2httpResponse) -> bool {
    let Some(Body::Text(text)) = &resp.body else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or_default();
    let message = v["error"]["message"].as_str().unwrap_or_default();
    code == "method_not_allowed" || (code == "not_found" && message.starts_with("no route for"))
}

/// The routes a handler answers, out of every route the API has.
async fn answered_by(function: &str) -> BTreeSet<Route> {
    let mut answered = BTreeSet::new();
    for route in Route::ALL {
        let resp = match function {
            "upload" => {
                let put = mock!(aws_sdk_s3::Client::put_object).then_output(|| {
                    aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build()
                });
                let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put]);
                let record = mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| {
                    aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build()
                });
                let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&record]);
                let ctx =
                    upload_function::Ctx::from_env(sts(), s3, ddb, &env_of("upload")).unwrap();
                upload_function::handler(&ctx, LambdaEvent::new(request(route), Context::default()))
                    .await
                    .unwrap()
            }
            "metadata" => {
                let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
                    aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build()
                });
                let scan = mock!(aws_sdk_dynamodb::Client::scan).then_output(|| {
                    aws_sdk_dynamodb::operation::scan::ScanOutput::builder().build()
                });
                let query = mock!(aws_sdk_dynamodb::Client::query).then_output(|| {
                    aws_sdk_dynamodb::operation::query::QueryOutput::builder().build()
                });
                let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get, &scan, &query]);
                let ctx =
                    metadata_function::Ctx::from_env(sts(), ddb, &env_of("metadata")).unwrap();
                metadata_function::handler(
                    &ctx,
                    LambdaEvent::new(request(route), Context::default()),
                )
                .await
                .unwrap()
            }
            "images" => {
                let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
                    aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build()
                });
                let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get]);
                let s3 = mock_client!(aws_sdk_s3, []);
                let ctx =
                    images_function::Ctx::from_env(sts(), s3, ddb, &env_of("images")).unwrap();
                images_function::handler(&ctx, LambdaEvent::new(request(route), Context::default()))
                    .await
                    .unwrap()
            }
            "delete" => {
                let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
                });
                let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&update]);
                let list = mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| {
                    aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput::builder()
                        .build()
                });
                let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&list]);
                let ctx =
                    delete_function::Ctx::from_env(sts(), s3, ddb, &env_of("delete")).unwrap();
                delete_function::handler(&ctx, LambdaEvent::new(request(route), Context::default()))
                    .await
                    .unwrap()
            }
            "web" => {
                let env = env_of("web");
                // Lambda sets the region; the app model does not.
                let vars = move |k: &str| {
                    env(k).or_else(|| match k {
                        "AWS_REGION" => Some("eu-west-1".to_string()),
                        "USER_POOL_ID" => Some("eu-west-1_AbC".to_string()),
                        "USER_POOL_CLIENT_ID" => Some("abc".to_string()),
                        _ => None,
                    })
                };
                let ctx = web_function::Ctx::from_env(&vars).unwrap();
                web_function::handler(&ctx, LambdaEvent::new(request(route), Context::default()))
                    .await
                    .unwrap()
            }
            other => panic!("{other} has no HTTP handler in this test: add it"),
        };
        if !not_routed(&resp) {
            answered.insert(route);
        }
    }
    answered
}

#[tokio::test]
async fn each_function_answers_exactly_the_routes_the_app_gives_it() {
    let app = App::image_pipeline();
    let mut declared_anywhere = BTreeSet::new();
    for f in app.functions.iter().filter(|f| !f.routes.is_empty()) {
        let declared: BTreeSet<Route> = f.routes.iter().map(|r| r.0).collect();
        let answered = answered_by(f.name).await;
        assert_eq!(
            answered, declared,
            "{}: the handler answers {answered:?}, the app declares {declared:?}",
            f.name
        );
        for r in declared {
            assert!(declared_anywhere.insert(r), "{r:?} is declared twice");
        }
    }
    let all: BTreeSet<Route> = Route::ALL.into_iter().collect();
    assert_eq!(
        declared_anywhere, all,
        "every route of the API belongs to one function"
    );
}

#[test]
fn a_request_outside_every_route_is_not_routed() {
    let mut req = request(Route::Upload);
    req.route_key = Some("$default".into());
    req.request_context.route_key = Some("$default".into());
    req.raw_path = Some("/admin".into());
    req.request_context.http.path = Some("/admin".into());
    let upload = handler_shared::RouteOf::of(&req);
    assert_eq!(upload.route(upload_function::ROUTES), None);
    assert!(not_routed(&upload.not_routed(upload_function::ROUTES)));
}
