//! Ticket buyers over HTTP: masking everywhere, encryption at rest, owner scoping, validation
//! and the per-account limit.

use crate::helpers::{spawn_app, spawn_app_with};
use serde_json::{Value, json};

const ID_CARD: &str = "11010519491231002X";

#[tokio::test]
async fn ticket_buyers_are_masked_in_every_response_and_encrypted_at_rest() {
    let app = spawn_app().await;
    let (user_id, token) = app.signed_in_buyer().await;
    let input = json!({"name": "张三丰", "id_type": "id_card", "id_number": ID_CARD});
    let r = app
        .post("/api/v1/me/ticket-buyers", Some(&token), &input)
        .await;
    assert_eq!(r.status(), 201);
    let created_text = r.text().await.unwrap();
    let list_text = app
        .get_as(&token, "/api/v1/me/ticket-buyers")
        .await
        .text()
        .await
        .unwrap();
    for text in [&created_text, &list_text] {
        assert!(
            !text.contains(ID_CARD) && !text.contains("张三丰"),
            "clear text leaked: {text}"
        );
    }
    let created: Value = serde_json::from_str(&created_text).unwrap();
    assert_eq!(created["name_masked"], "张**");
    assert_eq!(created["id_number_masked"], "1101**********002X");
    let list: Value = serde_json::from_str(&list_text).unwrap();
    assert_eq!(list["items"], json!([created]));

    let row = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT id_number_enc FROM ticket_buyers WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .unwrap();
    let stored: Vec<u8> = row.get(0);
    let needle = ID_CARD.as_bytes();
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle),
        "the id number is readable in the database row"
    );
    assert!(
        !stored.windows(4).any(|w| w == b"1101"),
        "not even its prefix"
    );
}

#[tokio::test]
async fn another_users_ticket_buyer_is_404_and_invisible() {
    let app = spawn_app().await;
    let (_, alice) = app.signed_in_buyer().await;
    let (_, bob) = app.signed_in_buyer().await;
    let input = json!({"name": "Alice", "id_type": "passport", "id_number": "E12345678"});
    let r = app
        .post("/api/v1/me/ticket-buyers", Some(&alice), &input)
        .await;
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let path = format!("/api/v1/me/ticket-buyers/{id}");

    assert_eq!(app.delete_as(&bob, &path).await.status(), 404);
    let bobs: Value = app
        .get_as(&bob, "/api/v1/me/ticket-buyers")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["items"], json!([]));
    assert_eq!(app.delete_as(&alice, &path).await.status(), 204);
    assert_eq!(
        app.delete_as(&alice, &path).await.status(),
        404,
        "already gone"
    );
    assert_eq!(app.get("/api/v1/me/ticket-buyers").await.status(), 401);
}

#[tokio::test]
async fn invalid_documents_are_422_and_the_same_person_twice_is_409() {
    let app = spawn_app().await;
    let (_, token) = app.signed_in_buyer().await;
    let cases = [
        (
            json!({"name": "X", "id_type": "id_card", "id_number": "110105194912310021"}),
            "id_number",
        ),
        (
            json!({"name": "X", "id_type": "visa", "id_number": "123456"}),
            "id_type",
        ),
        (
            json!({"name": "", "id_type": "passport", "id_number": "E12345678"}),
            "name",
        ),
        (json!({"name": "X", "id_type": "passport"}), "id_number"),
    ];
    for (input, field) in cases {
        let r = app
            .post("/api/v1/me/ticket-buyers", Some(&token), &input)
            .await;
        assert_eq!(r.status(), 422, "{input}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["details"]["field"],
            field,
            "{input}"
        );
    }
    let ok = json!({"name": "Y", "id_type": "id_card", "id_number": ID_CARD.to_lowercase()});
    assert_eq!(
        app.post("/api/v1/me/ticket-buyers", Some(&token), &ok)
            .await
            .status(),
        201
    );
    assert_eq!(
        app.post("/api/v1/me/ticket-buyers", Some(&token), &ok)
            .await
            .status(),
        409
    );
}

#[tokio::test]
async fn an_account_keeps_at_most_the_configured_number_even_concurrently() {
    let app = spawn_app_with(|s| s.accounts.max_ticket_buyers = 3).await;
    let (_, token) = app.signed_in_buyer().await;
    let inputs: Vec<Value> = (0..8)
        .map(|i| json!({"name": format!("P{i}"), "id_type": "passport", "id_number": format!("G0000000{i}")}))
        .collect();
    let answers = futures::future::join_all(
        inputs
            .iter()
            .map(|b| app.post("/api/v1/me/ticket-buyers", Some(&token), b)),
    )
    .await;
    let created = answers.iter().filter(|r| r.status() == 201).count();
    assert_eq!(created, 3);
    assert!(
        answers
            .iter()
            .all(|r| r.status() == 201 || r.status() == 422)
    );
    let list: Value = app
        .get_as(&token, "/api/v1/me/ticket-buyers")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}
