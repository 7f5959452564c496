//! The HTTP face of the service: DM's paths, login and session cookie, owner checks, DM's
//! argument encoding, and DM's error conventions (status headers and `errorCode` bodies).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{engine, locked, Shared};
use crate::client::{STATUS_CODE_HEADER, STATUS_MESSAGE_HEADER};
use crate::encoding::decode_argument;
use crate::error::status;
use crate::model::{ExperimentRun, ProcessingJob, Workflow};

/// The name of the session cookie.
const SESSION_COOKIE: &str = "session_id";
/// How long a stop request waits for the job to reach `aborted`.
const STOP_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/dm/login", post(login))
        .route("/dm/workflowsByOwner/{owner}", get(list_workflows))
        .route("/dm/workflowsByOwner/{owner}/{name}", get(get_workflow))
        .route("/dm/workflows/addWorkflow", post(add_workflow))
        .route("/dm/workflows/updateWorkflow", put(update_workflow))
        .route(
            "/dm/processingJobsByWorkflow/{owner}/{name}/startProcessingJob",
            post(start_job),
        )
        .route("/dm/processingJobsByOwner/{owner}", get(list_jobs))
        .route("/dm/processingJobsByOwner/{owner}/{id}", get(get_job))
        .route(
            "/dm/processingJobsByOwner/{owner}/{id}/stopProcessingJob",
            post(stop_job),
        )
        .route("/dm/runCatalog/{experiment}", get(list_runs))
        .route("/dm/runCatalog/{experiment}/addRun", post(add_run))
        .fallback(not_found)
        .with_state(shared)
}

/// A DM error reply: HTTP status, DM status headers, and an `errorCode`/`errorMessage` body.
#[derive(Debug)]
struct ApiError {
    http_status: StatusCode,
    code: i64,
    message: String,
}

impl ApiError {
    fn new(http_status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        ApiError {
            http_status,
            code,
            message: message.into(),
        }
    }

    fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, status::INVALID_ARGUMENT, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, status::OBJECT_NOT_FOUND, message)
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            status::DB_ERROR,
            message.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errorCode": self.code, "errorMessage": self.message});
        let mut response = (self.http_status, Json(body)).into_response();
        set_status_headers(response.headers_mut(), self.code, &self.message);
        response
    }
}

fn set_status_headers(headers: &mut HeaderMap, code: i64, message: &str) {
    let printable: String = message
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect();
    headers.insert(STATUS_CODE_HEADER, HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&printable) {
        headers.insert(STATUS_MESSAGE_HEADER, value);
    }
}

fn success(body: impl Serialize) -> Response {
    let mut response = Json(body).into_response();
    set_status_headers(response.headers_mut(), status::OK, "Success");
    response
}

type Reply = Result<Response, ApiError>;

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        status::INVALID_REQUEST,
        "No such DM request path.",
    )
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(State(shared): State<Arc<Shared>>, Form(form): Form<LoginForm>) -> Reply {
    if shared.users.get(&form.username) != Some(&form.password) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            status::AUTHENTICATION_ERROR,
            format!("Authentication failed for user {}.", form.username),
        ));
    }
    let session = uuid::Uuid::new_v4().simple().to_string();
    locked(&shared.sessions).insert(session.clone(), form.username);
    let mut response = success(Value::Object(Map::new()));
    let cookie = format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// The user of the request's session.
fn session_user(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string());
    session
        .and_then(|session| locked(&shared.sessions).get(&session).cloned())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                status::INVALID_SESSION,
                "Invalid or expired session: log in again.",
            )
        })
}

/// The user, who must be the owner named in the path.
fn owner_user(shared: &Shared, headers: &HeaderMap, owner: &str) -> Result<String, ApiError> {
    let user = session_user(shared, headers)?;
    if user != owner {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            status::AUTHORIZATION_ERROR,
            format!("User {user} is not authorized to act for owner {owner}."),
        ));
    }
    Ok(user)
}

fn decoded_text(encoded: &str, what: &str) -> Result<String, ApiError> {
    decode_argument(encoded).map_err(|err| ApiError::invalid_argument(format!("bad {what}: {err}")))
}

fn decoded_json<T: DeserializeOwned>(
    query: &HashMap<String, String>,
    key: &str,
) -> Result<T, ApiError> {
    let encoded = query
        .get(key)
        .ok_or_else(|| ApiError::invalid_argument(format!("missing argument {key}")))?;
    let text = decoded_text(encoded, key)?;
    serde_json::from_str(&text)
        .map_err(|err| ApiError::invalid_argument(format!("bad {key}: {err}")))
}

async fn list_workflows(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(owner): Path<String>,
) -> Reply {
    owner_user(&shared, &headers, &owner)?;
    Ok(success(
        shared.store.workflows(&owner).map_err(ApiError::internal)?,
    ))
}

fn find_workflow(shared: &Shared, owner: &str, name: &str) -> Result<Workflow, ApiError> {
    shared
        .store
        .workflow(owner, name)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!("Workflow {name} of owner {owner} does not exist."))
        })
}

async fn get_workflow(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Reply {
    owner_user(&shared, &headers, &owner)?;
    let name = decoded_text(&name, "workflow name")?;
    Ok(success(find_workflow(&shared, &owner, &name)?))
}

fn checked_workflow(
    shared: &Shared,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Workflow, ApiError> {
    let user = session_user(shared, headers)?;
    let mut workflow: Workflow = decoded_json(query, "workflow")?;
    if workflow.owner.is_empty() {
        workflow.owner = user.clone();
    }
    if workflow.owner != user {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            status::AUTHORIZATION_ERROR,
            format!(
                "User {user} may not write workflows of owner {}.",
                workflow.owner
            ),
        ));
    }
    if workflow.name.trim().is_empty() {
        return Err(ApiError::invalid_argument("A workflow needs a name."));
    }
    if workflow.stages.is_empty() {
        return Err(ApiError::invalid_argument(format!(
            "Workflow {} has no stages.",
            workflow.name
        )));
    }
    Ok(workflow)
}

async fn add_workflow(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let workflow = checked_workflow(&shared, &headers, &query)?;
    if shared
        .store
        .workflow(&workflow.owner, &workflow.name)
        .map_err(ApiError::internal)?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            status::OBJECT_ALREADY_EXISTS,
            format!(
                "Workflow {} of owner {} already exists.",
                workflow.name, workflow.owner
            ),
        ));
    }
    shared
        .store
        .put_workflow(&workflow)
        .map_err(ApiError::internal)?;
    Ok(success(workflow))
}

async fn update_workflow(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let workflow = checked_workflow(&shared, &headers, &query)?;
    find_workflow(&shared, &workflow.owner, &workflow.name)?;
    shared
        .store
        .put_workflow(&workflow)
        .map_err(ApiError::internal)?;
    Ok(success(workflow))
}

async fn start_job(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let user = owner_user(&shared, &headers, &owner)?;
    let name = decoded_text(&name, "workflow name")?;
    let args: Map<String, Value> = if query.contains_key("argsDict") {
        decoded_json(&query, "argsDict")?
    } else {
        Map::new()
    };
    let workflow = find_workflow(&shared, &owner, &name)?;
    let job = engine::new_job(&workflow, &user, args);
    shared.store.put_job(&job).map_err(ApiError::internal)?;
    if !job.status.is_final() {
        engine::launch(&shared, job.clone());
    }
    Ok(success(job))
}

fn find_job(shared: &Shared, owner: &str, id: &str) -> Result<ProcessingJob, ApiError> {
    shared
        .store
        .job(id)
        .map_err(ApiError::internal)?
        .filter(|job| job.owner == owner)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Processing job {id} of owner {owner} does not exist."
            ))
        })
}

async fn get_job(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((owner, id)): Path<(String, String)>,
) -> Reply {
    owner_user(&shared, &headers, &owner)?;
    Ok(success(find_job(&shared, &owner, &id)?))
}

async fn list_jobs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(owner): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    owner_user(&shared, &headers, &owner)?;
    let number = |key: &str| -> Result<Option<usize>, ApiError> {
        query
            .get(key)
            .map(|text| {
                text.trim()
                    .parse()
                    .map_err(|_| ApiError::invalid_argument(format!("{key} must be a number")))
            })
            .transpose()
    };
    let skip = number("skip")?.unwrap_or(0);
    let limit = number("limit")?.unwrap_or(usize::MAX);
    let filter: Map<String, Value> = if query.contains_key("queryDict") {
        decoded_json(&query, "queryDict")?
    } else {
        Map::new()
    };
    let jobs = shared.store.jobs(&owner).map_err(ApiError::internal)?;
    let mut selected = Vec::new();
    for job in jobs {
        let document = serde_json::to_value(&job).map_err(ApiError::internal)?;
        if filter
            .iter()
            .all(|(key, wanted)| document.get(key) == Some(wanted))
        {
            selected.push(job);
        }
    }
    let page: Vec<ProcessingJob> = selected.into_iter().skip(skip).take(limit).collect();
    Ok(success(page))
}

async fn stop_job(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((owner, id)): Path<(String, String)>,
) -> Reply {
    owner_user(&shared, &headers, &owner)?;
    let job = find_job(&shared, &owner, &id)?;
    if job.status.is_final() || !engine::request_stop(&shared, &id) {
        return Ok(success(job));
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    loop {
        let job = find_job(&shared, &owner, &id)?;
        if job.status.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(success(job));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn add_run(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(experiment): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    session_user(&shared, &headers)?;
    let mut run: ExperimentRun = decoded_json(&query, "run")?;
    if run.experiment_name.is_empty() {
        run.experiment_name = experiment.clone();
    }
    if run.experiment_name != experiment {
        return Err(ApiError::invalid_argument(format!(
            "Run {} names experiment {}, not {experiment}.",
            run.run_id, run.experiment_name
        )));
    }
    if run.run_id.trim().is_empty() {
        return Err(ApiError::invalid_argument("A run needs a runId."));
    }
    run.id = Some(uuid::Uuid::new_v4().to_string());
    if !shared.store.add_run(&run).map_err(ApiError::internal)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            status::OBJECT_ALREADY_EXISTS,
            format!(
                "Run {} of experiment {experiment} already exists.",
                run.run_id
            ),
        ));
    }
    Ok(success(run))
}

async fn list_runs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(experiment): Path<String>,
) -> Reply {
    session_user(&shared, &headers)?;
    Ok(success(
        shared.store.runs(&experiment).map_err(ApiError::internal)?,
    ))
}
