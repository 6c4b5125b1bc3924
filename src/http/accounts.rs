//! Accounts (API.md, "Accounts"): registration with a surge captcha and a Bloom-filter
//! pre-check, sessions (JWT + Redis revocation, wrong-password throttling) and the caller's
//! profile. Every response that carries a mobile or email masks it.

use super::AppState;
use super::error::ApiError;
use super::extractor::{ApiJson, AuthUser};
use super::limits;
use crate::crypto;
use crate::domain::identity::{self, mask_email, mask_mobile};
use crate::puzzle;
use crate::store::bloom::Handle;
use crate::store::users::{self, NewAccount, RegisterError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router, middleware};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::LazyLock;

/// Routes of this module, with the `auth` and `account` rate limits.
pub fn router(state: &AppState) -> Router<AppState> {
    let auth = Router::new()
        .route("/api/v1/users", post(register))
        .route("/api/v1/sessions", post(login))
        .route("/api/v1/captcha", post(new_challenge))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::auth));
    let account = Router::new()
        .route("/api/v1/sessions/current", delete(logout))
        .route("/api/v1/sessions", delete(sign_out_everywhere))
        .route("/api/v1/me", get(me))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::account,
        ));
    auth.merge(account)
}

/// `POST /api/v1/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Register {
    /// 6 to 20 digits, optionally starting with `+` (spaces and dashes are ignored).
    mobile: Option<String>,
    /// An email address; give it, the mobile, or both.
    #[schema(format = Email)]
    email: Option<String>,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// Shown name, at most 64 characters.
    #[schema(max_length = 64)]
    display_name: Option<String>,
    /// Required while registrations surge (428 `CAPTCHA_REQUIRED`).
    captcha: Option<CaptchaAnswer>,
}

/// A solved challenge from `POST /api/v1/captcha`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CaptchaAnswer {
    challenge_id: String,
    /// The nonce found: decimal digits.
    answer: String,
}

/// 201 of `POST /api/v1/users`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    /// The new account.
    user_id: i64,
}

/// Registers a buyer account.
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = Register,
    responses((status = 201, description = "The new account", body = Registered), (status = 409, description = "Mobile or email taken"),
        (status = 422, description = "A field is invalid"), (status = 428, description = "Captcha required (surge)")))]
pub async fn register(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<Register>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    let a = &st.settings.accounts;
    if st
        .sessions
        .note_registration(a.surge_registrations_per_sec, a.surge_hold_secs)
        .await?
    {
        require_captcha(&st, body.captcha.as_ref()).await?;
    }
    let mobile = body
        .mobile
        .as_deref()
        .map(identity::normalize_mobile)
        .transpose()?;
    let email = body
        .email
        .as_deref()
        .map(identity::normalize_email)
        .transpose()?;
    if mobile.is_none() && email.is_none() {
        return Err(ApiError::validation(
            "mobile",
            "give a mobile number or an email",
        ));
    }
    identity::check_password(&body.password)?;
    let display_name = identity::check_display_name(body.display_name.as_deref().unwrap_or(""))?;
    let handles: Vec<Handle> = [
        mobile.as_deref().map(Handle::Mobile),
        email.as_deref().map(Handle::Email),
    ]
    .into_iter()
    .flatten()
    .collect();
    for handle in &handles {
        refuse_taken(&st, *handle).await?;
    }
    let password = body.password.clone();
    let password_hash = password_work(&st, move || crypto::hash_password(&password))
        .await?
        .map_err(ApiError::internal)?;
    let account = NewAccount {
        mobile: mobile.as_deref(),
        email: email.as_deref(),
        password_hash: &password_hash,
        display_name,
    };
    let user_id = users::register(&st.stores.pg, account)
        .await
        .map_err(|e| match e {
            RegisterError::Taken(field) => taken(field),
            RegisterError::Store(e) => e.into(),
        })?;
    if let Err(e) = st.bloom.insert(&handles).await {
        tracing::warn!(error = %e, "bloom filter not updated; Postgres still refuses duplicates");
    }
    Ok((StatusCode::CREATED, Json(Registered { user_id })))
}

fn taken(field: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "DUPLICATE",
        format!("this {field} is already registered"),
    )
    .with_details(json!({ "field": field }))
}

/// 409 if the handle is registered. The Bloom filter answers "certainly not" without touching
/// Postgres; "maybe" (or a Redis failure) asks Postgres, which has the final word.
async fn refuse_taken(st: &AppState, handle: Handle<'_>) -> Result<(), ApiError> {
    let maybe = st.bloom.may_contain(handle).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "bloom filter unavailable; asking Postgres");
        true
    });
    if !maybe {
        return Ok(());
    }
    let (value, is_email, field) = match handle {
        Handle::Mobile(m) => (m, false, "mobile"),
        Handle::Email(e) => (e, true, "email"),
    };
    if users::handle_taken(&st.stores.pg, value, is_email).await? {
        return Err(taken(field));
    }
    Ok(())
}

async fn require_captcha(st: &AppState, captcha: Option<&CaptchaAnswer>) -> Result<(), ApiError> {
    let Some(c) = captcha else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "CAPTCHA_REQUIRED",
            "registrations are surging; solve a challenge from POST /api/v1/captcha and send it as `captcha`",
        )
        .with_details(json!({ "challenge_url": "/api/v1/captcha" })));
    };
    // Single use: taken from Redis whether or not the answer is right.
    let difficulty = st.sessions.take_challenge(&c.challenge_id).await?;
    let solved = difficulty.is_some_and(|d| puzzle::solves(&c.challenge_id, d, c.answer.trim()));
    if !solved {
        return Err(ApiError::validation(
            "captcha",
            "wrong or expired answer; get a new challenge",
        ));
    }
    Ok(())
}

/// 201 of `POST /api/v1/captcha`: a proof-of-work puzzle ([`puzzle`]). Find a decimal nonce
/// such that SHA-256(`challenge_id` ":" nonce) starts with `difficulty` zero bits, and send
/// `{challenge_id, answer: nonce}` with the registration.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Challenge {
    /// The puzzle's seed; names the challenge in the answer.
    challenge_id: String,
    /// `sha256-leading-zero-bits`.
    algorithm: &'static str,
    /// Zero bits the hash must start with (about 2^difficulty hashes to find).
    difficulty: u8,
    /// After this the answer is refused.
    expires_at: DateTime<Utc>,
}

/// `POST /api/v1/captcha`: a one-time proof-of-work puzzle, answerable for `captcha_ttl_secs`.
#[utoipa::path(post, path = "/api/v1/captcha", tag = "accounts",
    responses((status = 201, description = "A challenge", body = Challenge)))]
pub async fn new_challenge(
    State(st): State<AppState>,
) -> Result<(StatusCode, Json<Challenge>), ApiError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let a = &st.settings.accounts;
    let difficulty = a.captcha_difficulty_bits.min(puzzle::MAX_DIFFICULTY);
    st.sessions
        .store_challenge(&id, difficulty, a.captcha_ttl_secs)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Challenge {
            challenge_id: id,
            algorithm: puzzle::ALGORITHM,
            difficulty,
            expires_at: Utc::now() + chrono::Duration::seconds(a.captcha_ttl_secs as i64),
        }),
    ))
}

/// `POST /api/v1/sessions` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Login {
    login: String,
    password: String,
}

/// Runs argon2 `work` within the process's bound; 503 `PASSWORD_WORK_BUSY` (retry in a second)
/// when every slot is taken, so a flood of sign-ups or logins costs a refusal, not a queue of
/// 19 MiB jobs.
async fn password_work<T: Send + 'static>(
    st: &AppState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    st.password_work.run(work).await.ok_or_else(|| {
        metrics::counter!("password_work_refused_total").increment(1);
        ApiError::unavailable(
            "PASSWORD_WORK_BUSY",
            "too many sign-ins at once; retry shortly",
        )
    })
}

/// Verifying against this when the login is unknown keeps the answer time the same either way.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| crypto::hash_password("not-a-real-password").unwrap_or_default());

/// 201 of `POST /api/v1/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    /// Send as `Authorization: Bearer …`.
    token: String,
    /// The signed-in account.
    user_id: i64,
    /// The token stops working then.
    expires_at: DateTime<Utc>,
}

/// Signs in with mobile or email.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "accounts", request_body = Login,
    responses((status = 201, description = "A session token", body = Session), (status = 401, description = "Wrong login or password"),
        (status = 429, description = "Too many wrong passwords")))]
pub async fn login(
    State(st): State<AppState>,
    client: limits::ClientIp,
    ApiJson(body): ApiJson<Login>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let is_email = body.login.contains('@');
    let login = if is_email {
        identity::normalize_email(&body.login)
    } else {
        identity::normalize_mobile(&body.login)
    }
    .map_err(|_| ApiError::validation("login", "is neither a mobile number nor an email"))?;
    let limit = st.settings.accounts.login_failures_per_minute;
    // Counted before the password is checked: a parallel burst gets its allowance, no more.
    if let Some(wait_ms) = st
        .sessions
        .begin_login_attempt(&login, &client.0, limit)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_ATTEMPTS",
            "too many attempts from here; wait, each further try doubles the wait",
        )
        .retry_after(wait_ms.div_ceil(1000).max(1)));
    }
    let record = users::find_login(&st.stores.pg, &login, is_email).await?;
    let hash = record
        .as_ref()
        .map_or(DUMMY_HASH.clone(), |r| r.password_hash.clone());
    let password = body.password;
    let matches = password_work(&st, move || crypto::verify_password(&password, &hash)).await?;
    let Some(record) = record.filter(|r| matches && r.active) else {
        return Err(ApiError::unauthenticated("wrong login or password"));
    };
    st.sessions.login_succeeded(&login, &client.0).await?;
    let (token, claims) = st
        .tokens
        .issue(record.user_id, record.roles, Utc::now())
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(Session {
            token,
            user_id: record.user_id,
            expires_at: claims.expires_at(),
        }),
    ))
}

/// `DELETE /api/v1/sessions/current`: the token stops working on every node.
#[utoipa::path(delete, path = "/api/v1/sessions/current", tag = "accounts",
    responses((status = 204, description = "Signed out everywhere"), (status = 401, description = "Not signed in")))]
pub async fn logout(State(st): State<AppState>, user: AuthUser) -> Result<StatusCode, ApiError> {
    let ttl = user.0.exp - Utc::now().timestamp();
    st.sessions.revoke(&user.0.jti, ttl).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/sessions`: every token of the caller issued until now stops working, on
/// every node (a lost phone, a shared computer); the caller signs in again for a new one.
#[utoipa::path(delete, path = "/api/v1/sessions", tag = "accounts", operation_id = "sign_out_everywhere",
    responses((status = 204, description = "Every session of the caller ended"), (status = 401, description = "Not signed in")))]
pub async fn sign_out_everywhere(
    State(st): State<AppState>,
    user: AuthUser,
) -> Result<StatusCode, ApiError> {
    let ttl = st.settings.accounts.token_ttl_secs as i64;
    st.sessions.sign_out_everywhere(user.0.sub, ttl).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's profile; mobile and email masked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The account.
    user_id: i64,
    /// Masked mobile, if registered with one.
    mobile_masked: Option<String>,
    /// Masked email, if registered with one.
    email_masked: Option<String>,
    /// Shown name.
    display_name: String,
    /// Role names (`buyer`, `admin`).
    roles: Vec<String>,
}

/// `GET /api/v1/me`.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses((status = 200, description = "The caller's profile", body = Me)))]
pub async fn me(State(st): State<AppState>, user: AuthUser) -> Result<Json<Me>, ApiError> {
    let p = users::profile(&st.stores.pg, user.id())
        .await?
        .ok_or_else(|| ApiError::unauthenticated("the account no longer exists"))?;
    Ok(Json(Me {
        user_id: p.user_id,
        mobile_masked: p.mobile.as_deref().map(mask_mobile),
        email_masked: p.email.as_deref().map(mask_email),
        display_name: p.display_name,
        roles: p.roles,
    }))
}
