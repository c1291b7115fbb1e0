//! Where the pinned emulator authorizes differently from AWS, and the local environment is
//! made to follow AWS instead. Each fix is a small edit of the installed MiniStack, checked
//! against the exact text it replaces: a MiniStack that no longer has that text stops the
//! start with an error, so no fix is silently lost or applied to code it was not written for.
//!
//! - IAM `SimulatePrincipalPolicy` is authorized on the principal it simulates (its
//!   `PolicySourceArn`: a user, group or role, per the Service Authorization Reference for
//!   IAM). MiniStack 1.5.33 takes the resource of IAM actions only from `RoleName`,
//!   `UserName`, `PolicyArn` or `GroupName`, so it checks this action against `*`, and a
//!   policy that grants it on the function roles only (the deployer's) is refused.
//! - State survives a killed emulator. AWS keeps what it holds whatever happens to a process;
//!   MiniStack 1.5.33 writes its state (`PERSIST_STATE`) only when it shuts down cleanly, so a
//!   killed or crashed emulator came back with buckets, tables and stacks from its previous
//!   clean stop, pointing at objects and items that had changed since. With the fix, a save of
//!   every service's state follows each request by a second (one save per second however many
//!   requests arrive), or by ten times the last save's duration when the state is large, so
//!   saving never takes more than a tenth of the emulator's time. (Saving every second, a
//!   10,000-image burst slowed from about 13 to about 5 images a second as the state grew, and
//!   a save's cost grows with the state.)
//! - `SimulatePrincipalPolicy` applies the simulated principal's permissions boundary and the
//!   request's `ContextEntries`, as IAM's simulator does. MiniStack 1.5.33 ignored both, so a
//!   boundary that cut a needed permission, or a condition on `iam:PermissionsBoundary` or
//!   `iam:PassedToService`, could not be seen locally.
//! - Policy variables (`${aws:username}`, `${aws:userid}`, `${aws:PrincipalTag/…}`, any key of
//!   the request's context, with IAM's defaults) in `Resource`, `NotResource` and condition
//!   values take the calling (or simulated) principal's and the request's values, and an entry
//!   whose variable has no value matches nothing, as in IAM. MiniStack 1.5.33 substituted
//!   none of them but `${aws:username}` in `Resource`.
//! - CloudFormation's `RoleARN` needs `iam:PassRole` on that role (`iam:PassedToService`
//!   `cloudformation.amazonaws.com`) and the role must exist. MiniStack 1.5.33 accepted any
//!   `RoleARN` from anyone, so passing a role one may not pass went unnoticed locally. (It
//!   still provisions as its root, not as the role: see docs/local-environment.md.)
//! - A function whose `LoggingConfig` says `LogFormat: JSON` runs with `AWS_LAMBDA_LOG_FORMAT`
//!   and `AWS_LAMBDA_LOG_LEVEL` set, as Lambda's advanced logging controls do, so its runtime
//!   writes JSON lines. MiniStack 1.5.33 set neither, and the functions logged plain text
//!   locally while on AWS they log JSON.
//! - A stack deployed by a change set with a `RoleARN` keeps that role, and `DescribeStacks`
//!   names it, as on AWS. MiniStack 1.5.33 dropped it, so the no-op check of `deploy` (which
//!   compares the stack's role with the one it would pass) saw a difference on every run.
//! - An HTTP API's JWT authorizer verifies a user pool's tokens against the pool's keys.
//!   MiniStack 1.5.33 fetches them from `http://localhost:4566/{pool}/.well-known/jwks.json`,
//!   plain HTTP on a port that speaks only TLS under `USE_SSL=1`, so every token, valid or
//!   not, got 401 (measured). With the fix the authorizer reads the pool's keys where the
//!   emulator keeps them; the signature, issuer, audience, expiry and scope checks are its
//!   own. (Signing and verifying RS256 needs `cryptography`, pinned in
//!   `tools/local-requirements.txt`; without it MiniStack signs with a static key.)
//! - A stack deletes its bucket as `DeleteBucket` does. MiniStack 1.5.33's CloudFormation
//!   dropped the bucket from memory only: it deleted a bucket that still held objects (AWS
//!   fails the stack's deletion with `BucketNotEmpty`), and left the bucket's folder of
//!   persisted objects behind, so after `local down` and `local up` the deleted bucket was
//!   back, empty, and the next deploy of the stage failed with a name conflict (measured).
//!   Object and version deletions were already persisted (measured: a deleted version stays
//!   deleted across a restart).
//! - A DynamoDB request carries `dynamodb:LeadingKeys`: the partition key values of the items
//!   it reads or writes. MiniStack 1.5.33 never set it, so a `ForAllValues` condition on it
//!   (which holds for an absent key) let a session narrowed to one user read every user's
//!   items. The end-to-end test's mutation check fails without the fix.
//! - Rekognition authenticates every AWS principal and authorizes `rekognition:DetectLabels` by
//!   IAM. The local DetectLabels (a service of its own, which MiniStack 1.5.33 does not serve)
//!   could verify only the keys it could derive: the functions' execution-role sessions and
//!   the root key. An IAM user's valid key got `UnrecognizedClientException` (measured), a
//!   session a function assumed was unknown, and nobody was refused for lacking the permission.
//!   The fix lets the emulator's root ask the emulator who a key is: its secret (the label
//!   service checks the signature with it, and reads S3 as that caller) and IAM's decision on
//!   `rekognition:DetectLabels` for its principal, with its boundary and session policies.
//! - An SQS event source mapping's `MaximumConcurrency` is a number. When CloudFormation set it
//!   from a `Number` parameter, MiniStack 1.5.33 kept the parameter's string, and its poller
//!   failed on every pass comparing it (`'>=' not supported between instances of 'int' and
//!   'str'`, measured): nothing was ever delivered. AWS converts the value to the property's
//!   integer.
//! - CloudFormation's rollback triggers roll an update back. MiniStack 1.5.33 accepted a
//!   change set's `RollbackConfiguration` and ignored it. With the fix the stack keeps the
//!   configuration as the API reference says (given triggers replace its own, an empty list
//!   clears them, none given keeps them), and after the last resource of an update each
//!   trigger's alarm is watched for the monitoring time: one in `ALARM`, or one that does not
//!   exist, rolls the update back with MiniStack's own rollback, the reason on the stack's
//!   `UPDATE_ROLLBACK_IN_PROGRESS` event.
//! - An alarm watches the metric of its own dimensions and judges a metric a service records
//!   when it arrives, and an invocation by an SQS event source mapping counts in `AWS/Lambda`.
//!   MiniStack 1.5.33 matched namespace and name only (one function's errors set off another
//!   function's alarm), evaluated alarms only on `PutMetricData`, and recorded no metric for a
//!   mapping's invocations, so a failing process function never set off its alarm.
//! - An SQS batch (`SendMessageBatch`, `DeleteMessageBatch`, `ChangeMessageVisibilityBatch`)
//!   is authorized as the action it batches (`sqs:SendMessage`, …): IAM has no batch actions
//!   (Service Authorization Reference for SQS). MiniStack 1.5.33 asked for
//!   `sqs:SendMessageBatch`, which no policy can grant, so `redrive` as the deploying user was
//!   refused locally (measured) where AWS allows it.

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// One edit: in `file` (below `site-packages/ministack/`), `anchor` gains `insert` before it.
struct Fix {
    file: &'static str,
    anchor: &'static str,
    insert: &'static str,
}

const FIXES: &[Fix] = &[
    Fix {
        file: "core/iam_actions.py",
        anchor: "        role_name = _query_param(query_params, \"RoleName\")\n",
        insert: "        # image-pipeline fidelity fix: SimulatePrincipalPolicy acts on its PolicySourceArn.\n        policy_source = _query_param(query_params, \"PolicySourceArn\")\n        if policy_source:\n            return policy_source\n",
    },
    Fix {
        file: "app.py",
        anchor: "async def app(scope, receive, send):\n",
        insert: SAVE_SOON,
    },
    Fix {
        file: "app.py",
        anchor: "    method = scope[\"method\"]\n    path = scope[\"path\"]\n",
        insert: "    # image-pipeline fidelity fix: state is saved a moment after each request.\n    if PERSIST_STATE:\n        _image_pipeline_save_soon()\n",
    },
    Fix {
        file: "services/iam.py",
        anchor: "def _simulate_custom_policy(p):\n",
        insert: SIMULATE_PRINCIPAL,
    },
    Fix {
        file: "core/iam_evaluator.py",
        anchor: "def evaluate(ctx: EvalContext,\n",
        insert: POLICY_VARIABLES,
    },
    Fix {
        file: "services/cloudformation/__init__.py",
        anchor: "    handler = _ACTION_HANDLERS.get(action)\n",
        insert: PASS_ROLE,
    },
    // Lambda tells a function's runtime its log format and level (advanced logging controls).
    Fix {
        file: "services/lambda_svc.py",
        anchor: "    proc_env.update(execution_credentials(config))\n    proc_env.update(env_vars)\n",
        insert: "    # image-pipeline fidelity fix: a function logging as JSON is told so, as on AWS.\n    _logging = config.get(\"LoggingConfig\") or {}\n    if _logging.get(\"LogFormat\") == \"JSON\":\n        proc_env[\"AWS_LAMBDA_LOG_FORMAT\"] = \"JSON\"\n        proc_env[\"AWS_LAMBDA_LOG_LEVEL\"] = _logging.get(\"ApplicationLogLevel\") or \"INFO\"\n",
    },
    // A stack reports the role it acts as: a change set keeps its RoleARN, the stack takes it
    // when the change set runs, and DescribeStacks lists it.
    Fix {
        file: "services/cloudformation/changesets.py",
        anchor: "        \"_disable_validation\": _p(params, \"DisableValidation\", \"false\").lower() == \"true\",\n",
        insert: "        # image-pipeline fidelity fix: the change set keeps its role.\n        \"RoleARN\": _p(params, \"RoleARN\"),\n",
    },
    Fix {
        file: "services/cloudformation/changesets.py",
        anchor: "    stack[\"_disable_validation\"] = cs.get(\"_disable_validation\", False)\n",
        insert: "    # image-pipeline fidelity fix: the stack acts as the role its last change set named.\n    if cs.get(\"RoleARN\"):\n        stack[\"RoleARN\"] = cs[\"RoleARN\"]\n",
    },
    Fix {
        file: "services/cloudformation/handlers.py",
        anchor: "            f\"<Capabilities>{caps_xml}</Capabilities>\"\n            f\"<Parameters>{params_xml}</Parameters>\"\n            f\"<Outputs>{outputs_xml}</Outputs>\"\n",
        insert: "            # image-pipeline fidelity fix: DescribeStacks names the stack's role.\n            f\"{('<RoleARN>' + _esc(s['RoleARN']) + '</RoleARN>') if s.get('RoleARN') else ''}\"\n",
    },
    // The JWT authorizer reads a user pool's signing keys in-process, not over plain HTTP.
    Fix {
        file: "services/apigateway.py",
        anchor: "    cached = _jwks_cache.get(url)\n    now = time.time()\n",
        insert: USER_POOL_KEYS,
    },
    // A stack deletes its bucket as DeleteBucket does: refused while it holds anything, and
    // gone from the persisted data too.
    Fix {
        file: "services/cloudformation/provisioners.py",
        anchor: "    _s3._buckets.pop(physical_id, None)\n    _s3._bucket_versioning.pop(physical_id, None)\n",
        insert: STACK_BUCKET_DELETE,
    },
    // A DynamoDB request carries `dynamodb:LeadingKeys`, the partition key values it names.
    Fix {
        file: "core/iam_actions.py",
        anchor: "def dynamodb_service_context(body: bytes) -> dict:\n",
        insert: LEADING_KEYS,
    },
    // The local DetectLabels learns from the emulator who a key is and what it may do.
    Fix {
        file: "core/iam_evaluator.py",
        anchor: "def resolve_principal(access_key_id: str,\n",
        insert: PRINCIPAL_LOOKUP,
    },
    Fix {
        file: "app.py",
        anchor: "    if await _send_if_handled(\n        send, await _handle_pre_body_request(method, path, headers, query_params, request_id), receive\n    ):\n",
        insert: PRINCIPAL_ROUTE,
    },
    Fix {
        file: "core/iam_actions.py",
        anchor: "    select = data.get(\"Select\")\n",
        insert: "    # image-pipeline fidelity fix: the partition key values the request names.\n    _leading = _image_pipeline_leading_keys(data)\n    if _leading:\n        context[\"dynamodb:LeadingKeys\"] = _leading\n",
    },
    Fix {
        file: "services/lambda_svc.py",
        anchor: "    reserved = _reserved_concurrency(func_rec, config)\n",
        insert: "    # image-pipeline fidelity fix: CloudFormation gives MaximumConcurrency as its schema's integer.\n    limit = int(limit)\n",
    },
    Fix {
        file: "core/iam_actions.py",
        anchor: "    # Tier 1: Action query param (query-protocol services)\n",
        insert: SQS_BATCHES,
    },
    // CloudFormation's rollback triggers: kept from the change set, watched after the last
    // resource of an update, and an alarm in ALARM rolls the update back.
    Fix {
        file: "services/cloudformation/changesets.py",
        anchor: "def _execute_change_set(params):\n",
        insert: ROLLBACK_CONFIGURATION,
    },
    Fix {
        file: "services/cloudformation/changesets.py",
        anchor: "        \"OnStackFailure\": on_stack_failure,\n",
        insert: "        # image-pipeline fidelity fix: the rollback configuration, as given (None: not given).\n        \"_image_pipeline_rollback\": _image_pipeline_rollback_given(params),\n",
    },
    Fix {
        file: "services/cloudformation/changesets.py",
        anchor: "    stack[\"LastUpdatedTime\"] = now_iso()\n    stack[\"_template_body\"] = template_body\n",
        insert: "    # image-pipeline fidelity fix: the stack keeps the rollback configuration it was last given.\n    _image_pipeline_keep_rollback(stack, cs.get(\"_image_pipeline_rollback\"))\n",
    },
    Fix {
        file: "services/cloudformation/stacks.py",
        anchor: "async def _deploy_stack_async(stack_name: str, stack_id: str, template: dict,\n",
        insert: WATCH_TRIGGERS,
    },
    Fix {
        file: "services/cloudformation/stacks.py",
        anchor: "    # Replacement cleanup (update case): delete each replaced resource's\n",
        insert: ROLL_BACK_ON_ALARM,
    },
    // An alarm watches the metric of its own dimensions, and judges a metric a service
    // records (Lambda's, for one) when it arrives.
    Fix {
        file: "services/cloudwatch.py",
        anchor: "    if not all_pts:\n        return\n\n    period = alarm.get(\"Period\", 60)\n",
        insert: "    # image-pipeline fidelity fix: a metric is its namespace, name and every dimension.\n    _want = {d.get(\"Name\"): d.get(\"Value\") for d in alarm.get(\"Dimensions\") or []}\n    all_pts = [p for p in all_pts if (p.get(\"Dimensions\") or {}) == _want]\n",
    },
    Fix {
        file: "services/cloudwatch.py",
        anchor: "    except Exception:\n        logger.debug(\"record_metric failed for %s/%s\", namespace, metric_name, exc_info=True)\n",
        insert: ALARMS_ON_ARRIVAL,
    },
    // A function an SQS event source mapping invokes counts its invocations and errors.
    Fix {
        file: "services/lambda_svc.py",
        anchor: "    if result.get(\"error\"):\n        err_body = result.get(\"body\") or {}\n        err_type = err_body.get(\"errorType\") if isinstance(err_body, dict) else None\n",
        insert: "    # image-pipeline fidelity fix: an invocation by the mapping is an invocation, an error an error.\n    if not result.get(\"throttle\"):\n        _emit_lambda_metrics((func_rec.get(\"config\") or func_rec).get(\"FunctionName\") or func_name,\n                             duration_ms=0.0, error=bool(result.get(\"error\")), throttle=False)\n",
    },
];

/// Inside `record_metric`, after the point is kept: the alarms on exactly this metric (its
/// namespace, name and dimensions) judge it.
const ALARMS_ON_ARRIVAL: &str = r#"        # image-pipeline fidelity fix: the alarms on this metric judge it as it arrives.
        for _alarm in list(_alarms.values()):
            _on = {d.get("Name"): d.get("Value") for d in _alarm.get("Dimensions") or []}
            if (_alarm.get("Namespace") == namespace and _alarm.get("MetricName") == metric_name
                    and _on == dict(dims)):
                _evaluate_alarm(_alarm)
"#;

/// A change set's `RollbackConfiguration` as the request gives it (`None` when it gives
/// none), and how a stack keeps it: triggers given replace the stack's (an empty list clears
/// them), triggers not given keep the stack's, as the API reference says.
const ROLLBACK_CONFIGURATION: &str = r#"# image-pipeline fidelity fix: RollbackConfiguration.
def _image_pipeline_rollback_given(params):
    prefix = "RollbackConfiguration."
    if not any(str(k).startswith(prefix) for k in params):
        return None
    triggers = None
    if any(str(k).startswith(prefix + "RollbackTriggers") for k in params):
        triggers = []
        i = 1
        while _p(params, f"{prefix}RollbackTriggers.member.{i}.Arn"):
            triggers.append({"Arn": _p(params, f"{prefix}RollbackTriggers.member.{i}.Arn"),
                             "Type": _p(params, f"{prefix}RollbackTriggers.member.{i}.Type")})
            i += 1
    minutes = _p(params, prefix + "MonitoringTimeInMinutes", "")
    return {"RollbackTriggers": triggers, "MonitoringTimeInMinutes": int(minutes) if minutes else None}


def _image_pipeline_keep_rollback(stack, given):
    if given is None:
        return
    kept = dict(stack.get("_image_pipeline_rollback") or {})
    if given.get("RollbackTriggers") is not None:
        kept["RollbackTriggers"] = given["RollbackTriggers"]
    if given.get("MonitoringTimeInMinutes") is not None:
        kept["MonitoringTimeInMinutes"] = given["MonitoringTimeInMinutes"]
    stack["_image_pipeline_rollback"] = kept


"#;

/// Watches a stack's rollback triggers for its monitoring time: the reason to roll back (the
/// first trigger in ALARM, or one whose alarm does not exist), or `None`.
const WATCH_TRIGGERS: &str = r#"# image-pipeline fidelity fix: CloudFormation's rollback triggers, watched after the last
# resource of an update for the monitoring time.
async def _image_pipeline_watch_triggers(stack):
    import time as _time
    from ministack.services import cloudwatch as _cw
    config = stack.get("_image_pipeline_rollback") or {}
    arns = [t.get("Arn") for t in config.get("RollbackTriggers") or [] if t.get("Arn")]
    if not arns:
        return None
    deadline = _time.time() + 60 * int(config.get("MonitoringTimeInMinutes") or 0)
    while True:
        for arn in arns:
            name = _cw._alarm_name_from_local_arn(arn)
            alarm = _cw._alarms.get(name) if name else None
            if alarm is None:
                return f"Rollback trigger {arn} does not exist."
            if alarm.get("StateValue") == "ALARM":
                return f"Rollback trigger {arn} is in ALARM: {alarm.get('StateReason', '')}"
        if _time.time() >= deadline:
            return None
        await asyncio.sleep(1)


"#;

/// In an update, after the last resource and before the cleanup: a trigger's alarm rolls
/// the whole update back, with its reason on the stack's rollback event.
const ROLL_BACK_ON_ALARM: &str = r#"    # image-pipeline fidelity fix: a rollback trigger in ALARM rolls the update back.
    if not failed and is_update and previous_stack:
        _trigger = await _image_pipeline_watch_triggers(stack)
        if _trigger:
            _operation = _failed_operation(
                is_update, previous_stack, created_in_this_run, None, None,
                [entry[0] for entry in replaced_resources], False, template,
                param_values, retain_except_on_create, stack_tags, previous_tags, imports)
            await _roll_back_operation(stack_name, stack_id, stack, _operation,
                                       reason_override=_trigger)
            return

"#;

const SQS_BATCHES: &str = r#"    # image-pipeline fidelity fix: an SQS batch is authorized as the action it batches.
    if service == "sqs":
        _one = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
                "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}
        _op = (_action_from_query(query_params, body, headers.get("content-type", ""))
               or _action_from_target(headers))
        if _op in _one:
            return f"sqs:{_one[_op]}"
"#;

/// What a key is: for a service the emulator does not serve itself (the local DetectLabels),
/// which checks the request's signature with the secret and refuses what IAM refuses.
const PRINCIPAL_LOOKUP: &str = r#"# image-pipeline fidelity fix: a key the emulator knows (its root, an IAM user's, an STS or a
# function session's), its secret, and IAM's decision on one action its principal asks for on
# "*" (identity policies, permissions boundary and session policies), for the local services.
def image_pipeline_principal(access_key_id, action):
    from ministack.core.responses import _account_from_sts_session, get_account_id, get_region
    try:
        account_id = (_account_from_sts_session(access_key_id)
                      or find_iam_access_key_account(access_key_id) or get_account_id())
    except AmbiguousAccessKeyError:
        return 404, {"Code": "InvalidClientTokenId", "Message": "The key is ambiguous."}
    credential = resolve_credential(access_key_id, account_id)
    if isinstance(credential, CredentialResolutionError):
        return 404, {"Code": credential.code, "Message": credential.message}
    principal = resolve_principal(access_key_id, account_id, credential)
    if isinstance(principal, AuthError):
        return 404, {"Code": principal.code, "Message": principal.message}
    decision = "Allow"
    if principal.policies is not None:
        ctx = EvalContext(principal_arn=principal.arn, principal_type=principal.type,
                          principal_account=principal.account, action=action, resource_arn="*",
                          region=get_region(), service_context={"aws:tagkeys": None},
                          principal_keys=principal.keys)
        decision = evaluate(ctx, principal.policies, *principal.limits).decision
    return 200, {"AccessKeyId": access_key_id, "SecretAccessKey": credential.secret_access_key,
                 "SessionToken": credential.session_token, "PrincipalArn": principal.arn,
                 "Expiration": credential.expiration, "Decision": decision}


"#;

/// `GET /_image_pipeline/principal?AccessKeyId=…&Action=…`, asked by the emulator's root only.
const PRINCIPAL_ROUTE: &str = r#"    # image-pipeline fidelity fix: the local services ask who a key is (the root only may ask).
    if path == "/_image_pipeline/principal" and method == "GET":
        from ministack.core.iam_evaluator import image_pipeline_principal, is_root_access_key
        _asker = extract_access_key_id(headers, query_params)
        _key = (query_params.get("AccessKeyId") or [""])[0]
        _action = (query_params.get("Action") or [""])[0]
        if not _asker or not is_root_access_key(_asker):
            _status, _answer = 403, {"Code": "AccessDenied", "Message": "Only the emulator's root may ask."}
        elif not _key or ":" not in _action:
            _status, _answer = 400, {"Code": "ValidationError", "Message": "AccessKeyId and Action are required."}
        else:
            _status, _answer = image_pipeline_principal(_key, _action)
        await _send_response(send, _status, {"Content-Type": "application/json"},
                             json.dumps(_answer).encode())
        return
"#;

/// `dynamodb:LeadingKeys`: the partition key values of the items a request reads or writes
/// (`Key`, `Item`, a `Query`'s equality on the partition key of the table or of the index it
/// names, and every item of a batch or transaction). A `Scan` names none, as on AWS.
const LEADING_KEYS: &str = r#"# image-pipeline fidelity fix: dynamodb:LeadingKeys, which IAM conditions on.
def _image_pipeline_leading_keys(data):
    import re as _re
    from ministack.services import dynamodb as _ddb

    def scalar(value):
        if isinstance(value, dict):
            for kind in ("S", "N", "B"):
                if isinstance(value.get(kind), str):
                    return value[kind]
        return None

    def hash_key(table_name, index_name=None):
        name = str(table_name or "").rsplit("table/", 1)[-1].split("/", 1)[0]
        table = _ddb._tables.get(name) if name else None
        if not isinstance(table, dict):
            return None
        schema = table.get("KeySchema") or []
        if index_name:
            for index in (table.get("GlobalSecondaryIndexes") or []) + (table.get("LocalSecondaryIndexes") or []):
                if index.get("IndexName") == index_name:
                    schema = index.get("KeySchema") or []
        return next((k.get("AttributeName") for k in schema if k.get("KeyType") == "HASH"), None)

    def of_item(table_name, item):
        key = hash_key(table_name)
        value = scalar((item or {}).get(key)) if key and isinstance(item, dict) else None
        return [value] if value is not None else []

    def of_query(q):
        key = hash_key(q.get("TableName"), q.get("IndexName"))
        if not key:
            return []
        names = q.get("ExpressionAttributeNames") or {}
        values = q.get("ExpressionAttributeValues") or {}
        for left, right in _re.findall(r"([#\w.]+)\s*=\s*(:\w+)", q.get("KeyConditionExpression") or ""):
            if names.get(left, left) == key and scalar(values.get(right)) is not None:
                return [scalar(values.get(right))]
        legacy = (q.get("KeyConditions") or {}).get(key) or {}
        listed = [scalar(v) for v in legacy.get("AttributeValueList") or []]
        return [v for v in listed if v is not None][:1]

    keys = []
    table = data.get("TableName")
    if "Key" in data:
        keys += of_item(table, data.get("Key"))
    if "Item" in data:
        keys += of_item(table, data.get("Item"))
    if "KeyConditionExpression" in data or "KeyConditions" in data:
        keys += of_query(data)
    for name, request in (data.get("RequestItems") or {}).items():
        if isinstance(request, dict):
            for key in request.get("Keys") or []:
                keys += of_item(name, key)
        elif isinstance(request, list):
            for write in request:
                for member in ("PutRequest", "DeleteRequest"):
                    detail = (write or {}).get(member) or {}
                    keys += of_item(name, detail.get("Item") or detail.get("Key"))
    for item in data.get("TransactItems") or []:
        for member in ("Get", "Put", "Update", "Delete", "ConditionCheck"):
            detail = (item or {}).get(member)
            if isinstance(detail, dict):
                keys += of_item(detail.get("TableName"), detail.get("Key") or detail.get("Item"))
    return sorted(set(keys))


"#;

/// The start of the CloudFormation provisioner's bucket deletion: the S3 service's own
/// `DeleteBucket`, which refuses a bucket with objects or versions (as AWS does, failing the
/// stack's deletion) and removes the bucket's persisted data.
const STACK_BUCKET_DELETE: &str = r#"    # image-pipeline fidelity fix: a stack's bucket is deleted as DeleteBucket deletes it.
    if physical_id in _s3._buckets:
        _status = _s3._delete_bucket(physical_id)[0]
        if _status == 409:
            raise ValueError(
                "The bucket you tried to delete is not empty. You must delete all versions in "
                "the bucket. (Service: S3, Status Code: 409, Error Code: BucketNotEmpty)"
            )
        if _status >= 300 and _status != 404:
            raise ValueError(f"DeleteBucket of {physical_id} answered {_status}")
"#;

/// The start of `_fetch_jwks`: a user pool's JWKS URL on the emulator itself is answered from
/// the pool's keys.
const USER_POOL_KEYS: &str = r#"    # image-pipeline fidelity fix: a user pool's keys are read where the emulator keeps them.
    _local = f"http://{_HOST}:{_PORT}/"
    if url.startswith(_local) and url.endswith("/.well-known/jwks.json"):
        from ministack.services import cognito as _cognito
        _pool = url[len(_local):].split("/", 1)[0]
        return json.loads(_cognito.well_known_jwks(_pool)[2])
"#;

/// Replaces `_simulate_principal_policy` (the dispatch table is built further down the
/// module, so it takes this definition).
const SIMULATE_PRINCIPAL: &str = r#"# image-pipeline fidelity fix: the simulation applies the principal's permissions boundary and
# the request's ContextEntries, as IAM's simulator does.
def _simulate_principal_policy(p):
    from ministack.core.iam_evaluator import (EvalContext, evaluate, _gather_role_policies,
                                              _gather_user_policies, _permissions_boundary)
    from ministack.core.responses import get_account_id
    principal_arn = _p(p, "PolicySourceArn")
    if not principal_arn:
        return _error(400, "ValidationError", "PolicySourceArn is required.", ns="iam")
    actions, resource_arn = _extract_simulate_params(p)
    account_id = get_account_id()
    parts = principal_arn.split(":", 5)
    entity = parts[5] if len(parts) == 6 else ""
    name = entity.rsplit("/", 1)[-1]
    policies, limits, keys, kind = [], [], {}, "User"
    if entity.startswith("user/"):
        policies = _gather_user_policies(name, account_id)
        limits = _permissions_boundary(_users, name, account_id)
        keys["aws:username"] = name
    elif entity.startswith("role/"):
        policies = _gather_role_policies(name, account_id)
        limits = _permissions_boundary(_roles, name, account_id)
        kind = "AssumedRole"
    context = {}
    i = 1
    while _p(p, f"ContextEntries.member.{i}.ContextKeyName"):
        key = _p(p, f"ContextEntries.member.{i}.ContextKeyName").lower()
        values = []
        j = 1
        while _p(p, f"ContextEntries.member.{i}.ContextKeyValues.member.{j}"):
            values.append(_p(p, f"ContextEntries.member.{i}.ContextKeyValues.member.{j}"))
            j += 1
        context[key] = values[0] if len(values) == 1 else values
        i += 1
    members = ""
    for action in actions:
        decision = "implicitDeny"
        if policies:
            ctx = EvalContext(principal_arn=principal_arn, principal_type=kind,
                              principal_account=account_id, action=action,
                              resource_arn=resource_arn, region=get_region(),
                              source_ip="127.0.0.1", secure_transport=True,
                              service_context=context, principal_keys=keys)
            raw = evaluate(ctx, policies, *limits).decision
            decision = {"Allow": "allowed", "Deny": "explicitDeny"}.get(raw, "implicitDeny")
        members += (f"<member><EvalActionName>{action}</EvalActionName>"
                    f"<EvalResourceName>{resource_arn}</EvalResourceName>"
                    f"<EvalDecision>{decision}</EvalDecision>"
                    f"<MatchedStatements></MatchedStatements>"
                    f"<MissingContextValues></MissingContextValues></member>")
    return _xml(200, "SimulatePrincipalPolicyResponse",
                f"<SimulatePrincipalPolicyResult><EvaluationResults>{members}</EvaluationResults>"
                "<IsTruncated>false</IsTruncated></SimulatePrincipalPolicyResult>", ns="iam")


"#;

/// Wraps `_first_match`, which `evaluate` looks up when it runs.
const POLICY_VARIABLES: &str = r#"# image-pipeline fidelity fix: policy variables in Resource, NotResource and condition values
# (${aws:username}, ${aws:userid}, ${aws:PrincipalTag/k}, ${aws:PrincipalAccount},
# ${aws:PrincipalType}, ${aws:SourceIp}, ${s3:prefix}, any key of the request's context, with an
# optional default as in ${aws:PrincipalTag/k, 'x'}, and ${$} for a dollar sign) take the
# request's values, as in IAM. A Resource entry or a condition value whose variable has no
# value (and no default) matches nothing; so does a statement left with no Resource, no value
# for a condition, or a NotResource entry it cannot resolve.
_image_pipeline_first_match = _first_match
_IMAGE_PIPELINE_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _image_pipeline_value(spec, ctx):
    name, _, default = spec.partition(",")
    name, default = name.strip(), default.strip()
    if name == "$":
        return "$"
    value = _resolve_condition_key(name, ctx) if name else None
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if value is None or value == "":
        if len(default) >= 2 and default[0] == default[-1] == "'":
            return default[1:-1]
        return None
    return str(value)


def _image_pipeline_text(text, ctx):
    if not isinstance(text, str) or "${" not in text:
        return text
    missing = []

    def one(m):
        v = _image_pipeline_value(m.group(1), ctx)
        if v is None:
            missing.append(m.group(1))
            return ""
        return v

    out = _IMAGE_PIPELINE_VARIABLE.sub(one, text)
    return None if missing else out


def _image_pipeline_values(values, ctx):
    single = not isinstance(values, list)
    out = [v for v in (_image_pipeline_text(v, ctx) for v in ([values] if single else values))
           if v is not None]
    return None if not out else (out[0] if single else out)


def _image_pipeline_resolved(s, ctx):
    resources = [r for r in (_image_pipeline_text(r, ctx) for r in s.resources) if r is not None]
    not_resources = [r for r in (_image_pipeline_text(r, ctx) for r in s.not_resources)]
    if (s.resources and not resources) or any(r is None for r in not_resources):
        return None
    conditions = {}
    for operator, entries in (s.conditions or {}).items():
        if not isinstance(entries, dict):
            conditions[operator] = entries
            continue
        conditions[operator] = {}
        for key, values in entries.items():
            resolved = _image_pipeline_values(values, ctx)
            if resolved is None:
                return None
            conditions[operator][key] = resolved
    return replace(s, resources=resources, not_resources=not_resources, conditions=conditions)


def _first_match(ctx, stmts, effect):
    resolved = []
    for s in stmts:
        if "${" not in repr((s.resources, s.not_resources, s.conditions)):
            resolved.append(s)
            continue
        r = _image_pipeline_resolved(s, ctx)
        if r is not None:
            resolved.append(r)
    return _image_pipeline_first_match(ctx, resolved, effect)


"#;

/// Runs before any CloudFormation action is handled.
const PASS_ROLE: &str = r#"    # image-pipeline fidelity fix: passing a RoleARN needs iam:PassRole on it, and the role
    # must exist.
    if _p(params, "RoleARN"):
        from ministack.app import AUTH as _auth
        if _auth:
            from ministack.core.iam_evaluator import EvalResult, enforce, validate_role_arn
            from ministack.core.responses import get_region
            from ministack.core.router import extract_access_key_id
            from .helpers import _error
            role_arn = _p(params, "RoleARN")
            if validate_role_arn(role_arn):
                return _error("ValidationError",
                              f"Role {role_arn} is invalid or cannot be assumed")
            denied = enforce(extract_access_key_id(headers, query_params), "iam:PassRole", "iam",
                             get_region(), role_arn,
                             {"iam:PassedToService": "cloudformation.amazonaws.com"})
            if isinstance(denied, EvalResult):
                return _error("AccessDenied",
                              f"User: {denied.principal_arn} is not authorized to perform: "
                              f"iam:PassRole on resource: {role_arn}", 403)
"#;

/// A save of every service's state, at most a second after the request that asks for it; one
/// pending save at a time. Requests are served after startup has loaded the saved state, so a
/// save never overwrites it with an empty one.
const SAVE_SOON: &str = r#"# image-pipeline fidelity fix: state survives a killed emulator.
_image_pipeline_save_pending = False
_image_pipeline_save_cost = 0.0


def _image_pipeline_save_soon():
    global _image_pipeline_save_pending
    if _image_pipeline_save_pending:
        return
    _image_pipeline_save_pending = True

    async def _save():
        global _image_pipeline_save_pending, _image_pipeline_save_cost
        import time as _ip_time
        # A save blocks the emulator: at most a tenth of its time goes to saving.
        await asyncio.sleep(max(1.0, 10.0 * _image_pipeline_save_cost))
        _image_pipeline_save_pending = False
        _started = _ip_time.monotonic()
        try:
            save_all(_build_persistence_save_dict())
        except Exception as e:
            logger.error("image-pipeline: saving state failed: %s", e)
        _image_pipeline_save_cost = _ip_time.monotonic() - _started

    asyncio.get_running_loop().create_task(_save())


"#;

#[derive(Debug, Error)]
pub enum FidelityError {
    #[error("cannot find ministack's {file} in the virtualenv {venv}")]
    Missing { file: &'static str, venv: PathBuf },
    #[error(
        "ministack's {file} no longer has the code the local environment's fix was written for; update deployer/src/fidelity.rs for this version"
    )]
    Changed { file: &'static str },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Applies every fix to the MiniStack installed in the virtualenv `venv`; already applied
/// fixes are left as they are.
pub fn apply(venv: &Path) -> Result<(), FidelityError> {
    let package = site_packages(venv)?.join("ministack");
    for fix in FIXES {
        let path = package.join(fix.file);
        let io = |source| FidelityError::Io {
            path: path.clone(),
            source,
        };
        let text = fs::read_to_string(&path).map_err(io)?;
        if let Some(fixed) = patched(&text, fix)? {
            fs::write(&path, fixed).map_err(io)?;
        }
    }
    Ok(())
}

/// The text with `fix` applied, or `None` when it already is.
fn patched(text: &str, fix: &Fix) -> Result<Option<String>, FidelityError> {
    let applied = format!("{}{}", fix.insert, fix.anchor);
    if text.contains(&applied) {
        return Ok(None);
    }
    if text.matches(fix.anchor).count() != 1 {
        return Err(FidelityError::Changed { file: fix.file });
    }
    Ok(Some(text.replacen(fix.anchor, &applied, 1)))
}

fn site_packages(venv: &Path) -> Result<PathBuf, FidelityError> {
    let missing = || FidelityError::Missing {
        file: "site-packages",
        venv: venv.to_path_buf(),
    };
    fs::read_dir(venv.join("lib"))
        .map_err(|_| missing())?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("ministack").is_dir())
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BEFORE: &str = "    if service == \"iam\":\n        role_name = _query_param(query_params, \"RoleName\")\n        if role_name:\n";

    #[test]
    fn a_fix_applies_once_and_refuses_code_it_was_not_written_for() {
        let fix = &FIXES[0];
        let once = patched(BEFORE, fix).unwrap().unwrap();
        assert!(once.contains("PolicySourceArn"));
        assert!(once.ends_with(&format!("{}        if role_name:\n", fix.anchor)));
        assert_eq!(
            patched(&once, fix).unwrap(),
            None,
            "applying twice changes nothing"
        );
        assert!(matches!(
            patched("something else entirely", fix),
            Err(FidelityError::Changed { .. })
        ));
    }
}
