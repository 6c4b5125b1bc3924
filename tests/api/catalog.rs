//! Catalog and admin program management over HTTP: creation with layout and audit, roles,
//! validation, list filters and pages, live figures from the actors, and the read cache
//! (invalidated on every node by an admin edit, and not touching Postgres on a hit).

use crate::helpers::{
    TcpCut, TestApp, pg_addr, poll_until, signed_in_admin, spawn_app, spawn_app_behind,
};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

fn program(title: &str, area: &str, genre: &str, days_ahead: i64) -> Value {
    json!({
        "title": title, "area": area, "category": genre, "parent_category": "Concert",
        "venue": "Arena", "per_order_limit": 4, "per_account_limit": 6,
        "on_sale_at": Utc::now() - Duration::hours(1),
        "show_times": [Utc::now() + Duration::days(days_ahead)],
        "ticket_categories": [
            {"name": "Front", "price_cents": 90_000, "rows": 3, "seats_per_row": 4},
            {"name": "Standing", "price_cents": 30_000, "capacity": 50}
        ]
    })
}

async fn create(app: &TestApp, token: &str, body: &Value) -> Value {
    let r = app.post("/api/v1/admin/programs", Some(token), body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let r = app.get(path).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn an_admin_creates_a_program_with_its_layout_and_an_audit_row() {
    let app = spawn_app().await;
    let (admin_id, token) = signed_in_admin(&app).await;
    let created = create(&app, &token, &program("Night Show", "Beijing", "Pop", 30)).await;
    let id = created["id"].as_i64().unwrap();

    let detail = get_json(&app, &format!("/api/v1/programs/{id}")).await;
    assert_eq!(detail["title"], "Night Show");
    assert_eq!(detail["per_order_limit"], 4);
    assert_eq!(detail["per_account_limit"], 6);
    assert_eq!(detail["show_times"].as_array().unwrap().len(), 1);
    let tiers = detail["ticket_categories"].as_array().unwrap();
    assert_eq!(tiers[0]["capacity"], 12);
    assert_eq!(tiers[0]["remaining"], 12);
    assert_eq!(tiers[1]["seated"], false);
    assert_eq!(tiers[1]["remaining"], 50);

    let client = app.pg.get().await.unwrap();
    let seats: i64 = client
        .query_one("SELECT count(*) FROM seats WHERE program_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seats, 12);
    let audit = client
        .query_one(
            "SELECT admin_user_id, action, target FROM admin_audit_log",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(audit.get::<_, i64>(0), admin_id);
    assert_eq!(audit.get::<_, &str>(1), "program.create");
    assert_eq!(audit.get::<_, String>(2), format!("program:{id}"));
}

#[tokio::test]
async fn admin_routes_refuse_buyers_with_403_and_strangers_with_401() {
    let app = spawn_app().await;
    let (_, buyer) = app.signed_in_buyer().await;
    let body = program("Nope", "Beijing", "Pop", 3);
    let r = app
        .post("/api/v1/admin/programs", Some(&buyer), &body)
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "FORBIDDEN"
    );
    assert_eq!(
        app.post("/api/v1/admin/programs", None, &body)
            .await
            .status(),
        401
    );
    let edit = app
        .http
        .patch(format!("{}/api/v1/admin/programs/1", app.address))
        .bearer_auth(&buyer)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(edit.status(), 403);
}

#[tokio::test]
async fn program_creation_is_validated_naming_the_field() {
    let app = spawn_app().await;
    let (_, token) = signed_in_admin(&app).await;
    let mut cases = Vec::new();
    let mut no_shows = program("A", "B", "C", 1);
    no_shows["show_times"] = json!([]);
    cases.push((no_shows, "show_times"));
    let mut bad_layout = program("A", "B", "C", 1);
    bad_layout["ticket_categories"][0]["capacity"] = json!(10);
    cases.push((bad_layout, "ticket_categories"));
    let mut limits = program("A", "B", "C", 1);
    limits["per_account_limit"] = json!(2);
    cases.push((limits, "per_account_limit"));
    let mut huge = program("A", "B", "C", 1);
    huge["ticket_categories"][0]["rows"] = json!(100_000);
    cases.push((huge, "ticket_categories"));
    let mut twice = program("A", "B", "C", 1);
    twice["show_times"] = json!([twice["show_times"][0], twice["show_times"][0]]);
    cases.push((twice, "show_times"));
    let mut untitled = program("", "B", "C", 1);
    untitled["title"] = json!(" ");
    cases.push((untitled, "title"));
    for (body, field) in cases {
        let r = app
            .post("/api/v1/admin/programs", Some(&token), &body)
            .await;
        assert_eq!(r.status(), 422, "{field}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["details"]["field"],
            field
        );
    }
}

#[tokio::test]
async fn the_program_list_filters_and_pages() {
    let app = spawn_app().await;
    let (_, token) = signed_in_admin(&app).await;
    let specs = [
        ("Jazz Evening", "Shanghai", "Jazz", 10),
        ("Rock Night", "Shanghai", "Rock", 20),
        ("Rock Revival", "Beijing", "Rock", 30),
        ("Pop Parade", "Beijing", "Pop", 40),
        ("Late JAZZ", "Chengdu", "Jazz", 50),
    ];
    for (title, area, genre, days) in specs {
        create(&app, &token, &program(title, area, genre, days)).await;
    }
    let titles = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap().to_string())
            .collect()
    };
    let all = get_json(&app, "/api/v1/programs").await;
    assert_eq!(all["total"], 5);
    assert_eq!(titles(&all)[0], "Jazz Evening", "earliest show first");
    assert_eq!(all["items"][0]["remaining"], 62);
    assert_eq!(all["items"][0]["min_price_cents"], 30_000);

    assert_eq!(
        titles(&get_json(&app, "/api/v1/programs?area=Shanghai").await),
        ["Jazz Evening", "Rock Night"]
    );
    assert_eq!(
        titles(&get_json(&app, "/api/v1/programs?category=Rock").await),
        ["Rock Night", "Rock Revival"]
    );
    assert_eq!(
        get_json(&app, "/api/v1/programs?category=Concert").await["total"],
        5,
        "parent matches children"
    );
    assert_eq!(
        titles(&get_json(&app, "/api/v1/programs?q=jazz").await),
        ["Jazz Evening", "Late JAZZ"]
    );
    let from = (Utc::now() + Duration::days(15)).to_rfc3339();
    let to = (Utc::now() + Duration::days(35)).to_rfc3339();
    let window = get_json(
        &app,
        &format!(
            "/api/v1/programs?from={}&to={}",
            urlencode(&from),
            urlencode(&to)
        ),
    )
    .await;
    assert_eq!(titles(&window), ["Rock Night", "Rock Revival"]);

    let mut seen = Vec::new();
    for page in 1..=3 {
        let p = get_json(&app, &format!("/api/v1/programs?per_page=2&page={page}")).await;
        assert_eq!(p["total"], 5);
        assert_eq!(p["page"], page);
        seen.extend(titles(&p));
    }
    assert_eq!(seen, titles(&all), "pages cover the list once, in order");
    let past = get_json(&app, "/api/v1/programs?per_page=2&page=9").await;
    assert_eq!(
        (past["items"].as_array().unwrap().len(), &past["total"]),
        (0, &json!(5))
    );
    assert_eq!(app.get("/api/v1/programs?page=x").await.status(), 422);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn detail_and_seat_map_show_the_actors_live_state() {
    let app = spawn_app().await;
    let (_, token) = signed_in_admin(&app).await;
    let id = create(&app, &token, &program("Live", "Beijing", "Pop", 5)).await["id"]
        .as_i64()
        .unwrap();
    // Two seats held by an order before any actor started: the actor loads them.
    app.pg
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE seats SET status = 'held', order_no = 77, hold_expires_at = now() + interval '1 hour'
             WHERE program_id = $1 AND row_no = 1 AND col_no IN (2, 3)",
            &[&id],
        )
        .await
        .unwrap();
    let detail = get_json(&app, &format!("/api/v1/programs/{id}")).await;
    assert_eq!(detail["ticket_categories"][0]["remaining"], 10);

    let map = get_json(&app, &format!("/api/v1/programs/{id}/seats")).await;
    assert!(map["seq"].is_u64());
    let front = &map["categories"][0];
    assert_eq!(front["remaining"], 10);
    let seats = front["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 12);
    let held: Vec<(i64, i64)> = seats
        .iter()
        .filter(|s| s["status"] == "held")
        .map(|s| (s["row"].as_i64().unwrap(), s["col"].as_i64().unwrap()))
        .collect();
    assert_eq!(held, [(1, 2), (1, 3)]);
    assert_eq!(
        map["categories"][1]["seats"],
        json!([]),
        "general admission has no seats"
    );
    assert_eq!(app.get("/api/v1/programs/999999").await.status(), 404);
    assert_eq!(app.get("/api/v1/programs/999999/seats").await.status(), 404);
}

#[tokio::test]
async fn an_admin_edit_invalidates_every_cache_level_on_every_node() {
    let app = spawn_app().await;
    let other = app.spawn_sibling().await;
    let (_, token) = signed_in_admin(&app).await;
    let id = create(&app, &token, &program("Old Title", "Beijing", "Pop", 5)).await["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/programs/{id}");
    for node in [&app, &other] {
        assert_eq!(get_json(node, &path).await["title"], "Old Title");
        assert_eq!(
            get_json(node, "/api/v1/programs").await["items"][0]["title"],
            "Old Title"
        );
    }
    let edit = app
        .http
        .patch(format!("{}/api/v1/admin/programs/{id}", app.address))
        .bearer_auth(&token)
        .json(&json!({"title": "New Title", "per_order_limit": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(edit.status(), 200);
    assert_eq!(
        get_json(&app, &path).await["title"],
        "New Title",
        "the editing node at once"
    );
    let (detail, list) = poll_until(
        std::time::Duration::from_secs(5),
        async || {
            (
                get_json(&other, &path).await,
                get_json(&other, "/api/v1/programs").await,
            )
        },
        |(detail, list)| detail["title"] == "New Title" && list["items"][0]["title"] == "New Title",
    )
    .await;
    assert_eq!(
        detail["title"], "New Title",
        "the other node kept serving the old program"
    );
    assert_eq!(
        list["items"][0]["title"], "New Title",
        "the other node kept serving the old list"
    );
    assert_eq!(detail["per_order_limit"], 2);
    let bad = app
        .http
        .patch(format!("{}/api/v1/admin/programs/{id}", app.address))
        .bearer_auth(&token)
        .json(&json!({"per_account_limit": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422, "limits stay consistent");
}

#[tokio::test]
async fn cache_hits_send_nothing_to_postgres() {
    let proxy = TcpCut::start(pg_addr()).await;
    // Only requests may talk to Postgres here: no relay, consumers or sweeps in the background.
    let app = spawn_app_behind(&proxy, |s| {
        s.events.relay = false;
        s.events.consumers = false;
        s.actors.live_holds_sweep_secs = 0;
        // The health probe's `SELECT 1` every half second is not a request's doing.
        s.health.probe_interval_ms = 3_600_000;
        // Idle seat maps are re-read after this; the loop below may take seconds on a busy
        // machine.
        s.cache.idle_seat_map_ms = 3_600_000;
    })
    .await;
    let (_, token) = signed_in_admin(&app).await;
    let id = create(&app, &token, &program("Cached", "Beijing", "Pop", 5)).await["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/programs/{id}");
    for warm_up in [path.as_str(), "/api/v1/programs", &format!("{path}/seats")] {
        get_json(&app, warm_up).await;
    }

    let before = proxy.bytes_sent();
    for _ in 0..20 {
        get_json(&app, &path).await;
        get_json(&app, "/api/v1/programs").await;
        get_json(&app, &format!("{path}/seats")).await;
    }
    assert_eq!(proxy.bytes_sent(), before, "a cache hit talked to Postgres");

    let other_program = create(&app, &token, &program("Cold", "Beijing", "Pop", 6)).await["id"]
        .as_i64()
        .unwrap();
    let before_miss = proxy.bytes_sent();
    get_json(&app, &format!("/api/v1/programs/{other_program}")).await;
    assert!(
        proxy.bytes_sent() > before_miss,
        "the proxy does see queries on a miss"
    );
}

/// A running app with a program of two show times, created by an admin through the API (the
/// later show time listed first in the request).
struct TwoShows {
    app: TestApp,
    /// The create answer.
    created: Value,
    /// Program id.
    id: i64,
    /// Show time ids, earliest first.
    shows: Vec<i64>,
    /// Their start times, earliest first.
    starts: [chrono::DateTime<Utc>; 2],
}

async fn two_shows(title: &str) -> TwoShows {
    let app = spawn_app().await;
    let (_, token) = signed_in_admin(&app).await;
    let early = Utc::now() + Duration::days(7);
    let starts = [early, early + Duration::days(1)];
    let mut body = program(title, "Beijing", "Pop", 7);
    body["show_times"] = json!([starts[1], starts[0]]);
    let created = create(&app, &token, &body).await;
    let id = created["id"].as_i64().unwrap();
    let shows = show_time_ids(&created, &starts);
    TwoShows {
        app,
        created,
        id,
        shows,
        starts,
    }
}

/// Whether the RFC 3339 time `v` is `at` (to the second: the JSON round trip may round).
fn same_time(v: &Value, at: &chrono::DateTime<Utc>) -> bool {
    serde_json::from_value::<chrono::DateTime<Utc>>(v.clone())
        .is_ok_and(|t| (t - *at).abs() < Duration::seconds(1))
}

/// The show time ids of a detail, earliest first, after checking their start times.
fn show_time_ids(detail: &Value, starts: &[chrono::DateTime<Utc>]) -> Vec<i64> {
    let shows = detail["show_times"].as_array().unwrap();
    assert!(
        shows.len() == starts.len()
            && shows
                .iter()
                .zip(starts)
                .all(|(s, at)| same_time(&s["starts_at"], at)),
        "show times earliest first: {shows:?}"
    );
    shows.iter().map(|s| s["id"].as_i64().unwrap()).collect()
}

/// (row, col) → seat id of one seat-map category.
fn seat_grid(category: &Value) -> std::collections::BTreeMap<(i64, i64), i64> {
    category["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let at = (s["row"].as_i64().unwrap(), s["col"].as_i64().unwrap());
            (at, s["id"].as_i64().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn each_show_time_has_its_own_ticket_categories_and_seats() {
    let TwoShows {
        app,
        created,
        id,
        shows,
        starts,
    } = two_shows("Two Nights").await;
    let detail = get_json(&app, &format!("/api/v1/programs/{id}")).await;
    assert_eq!(
        show_time_ids(&detail, &starts),
        shows,
        "create answers the detail"
    );
    assert_eq!(created["ticket_categories"], detail["ticket_categories"]);

    let tiers = detail["ticket_categories"].as_array().unwrap();
    let listed: Vec<(i64, &str)> = tiers
        .iter()
        .map(|t| {
            (
                t["show_time_id"].as_i64().unwrap(),
                t["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (shows[0], "Front"),
            (shows[0], "Standing"),
            (shows[1], "Front"),
            (shows[1], "Standing")
        ],
        "every tier once per show time, grouped by show time"
    );
    let ids: std::collections::BTreeSet<i64> =
        tiers.iter().map(|t| t["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 4, "four distinct categories");
    assert!(tiers.iter().all(|t| t["remaining"] == t["capacity"]));

    let map = get_json(&app, &format!("/api/v1/programs/{id}/seats")).await;
    let cats = map["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 4);
    let (first, second) = (seat_grid(&cats[0]), seat_grid(&cats[2]));
    assert_eq!(first.len(), 12);
    assert!(
        first.keys().eq(second.keys()),
        "same rows and seat numbers in both show times"
    );
    assert!(
        first.values().all(|s| !second.values().any(|o| o == s)),
        "but different seats"
    );
    assert_eq!(
        (&cats[0]["show_time_id"], &cats[2]["show_time_id"]),
        (&json!(shows[0]), &json!(shows[1]))
    );

    let list = get_json(&app, "/api/v1/programs").await;
    let item = &list["items"][0];
    assert_eq!(
        item["remaining"],
        2 * (12 + 50),
        "the list counts every show time"
    );
    assert!(same_time(&item["first_show_at"], &starts[0]), "{item}");
}

#[tokio::test]
async fn a_seat_held_for_one_show_time_stays_available_for_the_other() {
    let TwoShows { app, id, shows, .. } = two_shows("Held Once").await;
    // Row 1 seat 2 held for the first show time before any actor started: the actor loads it.
    app.pg
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE seats s SET status = 'held', order_no = 77, hold_expires_at = now() + interval '1 hour'
             FROM ticket_categories tc
             WHERE tc.id = s.ticket_category_id AND tc.show_time_id = $1 AND s.row_no = 1 AND s.col_no = 2",
            &[&shows[0]],
        )
        .await
        .unwrap();
    let status_at = |map: &Value| -> Vec<String> {
        map["categories"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["seated"] == true)
            .flat_map(|c| c["seats"].as_array().unwrap().clone())
            .filter(|s| s["row"] == 1 && s["col"] == 2)
            .map(|s| s["status"].as_str().unwrap().to_string())
            .collect()
    };
    for (show, expected) in [(shows[0], "held"), (shows[1], "available")] {
        let map = get_json(
            &app,
            &format!("/api/v1/programs/{id}/seats?show_time_id={show}"),
        )
        .await;
        let cats = map["categories"].as_array().unwrap();
        assert_eq!(cats.len(), 2, "only this show time's tiers");
        assert!(cats.iter().all(|c| c["show_time_id"] == show));
        assert_eq!(status_at(&map), [expected], "show time {show}");
    }
    let detail = get_json(&app, &format!("/api/v1/programs/{id}")).await;
    let remaining: Vec<&Value> = detail["ticket_categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "Front")
        .map(|c| &c["remaining"])
        .collect();
    assert_eq!(remaining, [&json!(11), &json!(12)]);
}

#[tokio::test]
async fn the_seat_map_refuses_a_show_time_of_another_program() {
    let app = spawn_app().await;
    let (_, token) = signed_in_admin(&app).await;
    let id = create(&app, &token, &program("Mine", "Beijing", "Pop", 5)).await["id"]
        .as_i64()
        .unwrap();
    let other = create(&app, &token, &program("Theirs", "Beijing", "Pop", 6)).await;
    let foreign = other["show_times"][0]["id"].as_i64().unwrap();
    for show in [foreign, 999_999] {
        let r = app
            .get(&format!("/api/v1/programs/{id}/seats?show_time_id={show}"))
            .await;
        assert_eq!(r.status(), 404, "show time {show}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    let r = app
        .get(&format!("/api/v1/programs/{id}/seats?show_time_id=soon"))
        .await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn the_openapi_document_describes_show_times() {
    let app = spawn_app().await;
    let doc = get_json(&app, "/api-docs/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["ShowTimeInfo"]["properties"]["id"].is_object(),
        "{schemas}"
    );
    assert!(schemas["CategoryInfo"]["properties"]["show_time_id"].is_object());
    let params = doc["paths"]["/api/v1/programs/{id}/seats"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "show_time_id" && p["in"] == "query"),
        "{params:?}"
    );
}

/// A crawler asking for every seat map must not load the catalog into memory: a category
/// whose actor is not running is served from Postgres without starting one, and once an actor
/// runs its published snapshot is served, with a `seq` above the idle one.
#[tokio::test]
async fn a_seat_map_starts_no_actor_and_follows_one_that_runs() {
    use boxoffice::actors::{Hold, Selection, Supervisor};
    use boxoffice::http::seat_map::SeatMapParts;
    use boxoffice::store::catalog_cache::CatalogCache;
    use boxoffice::store::inventory::PgInventoryStore;
    use std::sync::Arc;
    let app = spawn_app().await;
    let (program, front, _) = crate::helpers::on_sale(&app, 4, 4).await;
    let redis = boxoffice::store::RedisStore::connect(&app.settings.redis)
        .await
        .unwrap();
    let catalog = CatalogCache::new(app.pg.clone(), redis, app.settings.cache.clone());
    let store = Arc::new(PgInventoryStore::new(
        app.pg.clone(),
        tokio::runtime::Handle::current(),
    ));
    let clock = Arc::new(boxoffice::clock::SystemClock);
    let supervisor = Supervisor::new(store.clone(), clock, crate::helpers::actor_settings());
    let parts = SeatMapParts::new(std::time::Duration::from_secs(5));
    let detail = catalog.detail(program).await.unwrap().unwrap();
    let tier = detail
        .ticket_categories
        .iter()
        .find(|c| c.id == front)
        .unwrap();
    let idle = parts.part(tier, &supervisor, &catalog).await.unwrap();
    assert_eq!(supervisor.active(), 0, "no actor started for a read");
    let idle_map: Value = serde_json::from_slice(&idle.json).unwrap();
    assert_eq!(idle_map["remaining"], 20);
    let first_seat = idle_map["seats"][0]["id"].as_i64().unwrap();

    let hold = Hold {
        order_no: 1,
        selection: Selection::Seats(vec![(first_seat, 50_000)]),
        expires_at: Utc::now() + Duration::hours(1),
    };
    crate::helpers::hold_via(&supervisor, &*store, front, hold)
        .await
        .unwrap();
    let live = poll_until(
        std::time::Duration::from_secs(5),
        async || parts.part(tier, &supervisor, &catalog).await.unwrap(),
        // The hold is published once committed (a pending one counts, but shows no colour).
        |p| serde_json::from_slice::<Value>(&p.json).unwrap()["seats"][0]["status"] == "held",
    )
    .await;
    let live_map: Value = serde_json::from_slice(&live.json).unwrap();
    assert_eq!(
        live_map["seats"][0]["status"], "held",
        "{idle_map}\n{live_map}"
    );
    assert_eq!(live_map["remaining"], 19);
    assert!(live.seq > idle.seq, "{} after {}", live.seq, idle.seq);
    let again = parts.part(tier, &supervisor, &catalog).await.unwrap();
    assert!(
        Arc::ptr_eq(&again, &live) || again.seq > live.seq,
        "one serialization per published snapshot"
    );
}
