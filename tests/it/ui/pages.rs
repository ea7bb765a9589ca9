//! The pages in a real browser: headless Chromium, driven over WebDriver as a person clicks,
//! with JavaScript only in the test's hands (the pages have none), and axe-core in each page.

use std::time::Duration;

use fantoccini::Locator;

use super::browser::Browser;
use super::{passed_restore_test, with_admin, ADMIN_TOKEN};
use crate::support::app::{spawn_app_with, Backend, API_TOKEN};
use crate::support::approvals::{waiting_for_approval, TARGET};
use crate::support::world::{self, World, FAILED_DUMP, LIVE};

/// Removes the CSRF field of the form matching `form`, as a forged post would lack it.
async fn strip_csrf(b: &Browser, form: &str) {
    b.client
        .execute(
            &format!("document.querySelector('{form} input[name=csrf]').remove(); return true;"),
            vec![],
        )
        .await
        .expect("the test's script runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_signs_in_and_reads_an_incidents_diagnosis_and_timeline() {
    // Arrange: an incident whose restart waits for a person, a passed restore test.
    let app = spawn_app_with(Backend::Sqlite, &with_admin()).await;
    let (id, _) = waiting_for_approval(&app.store, &["restart_primary"]).await;
    passed_restore_test(&app.store, "link_users").await;
    let b = Browser::start().await;

    // Signed out, the incident's link from Slack lands on the sign-in form, then back.
    b.goto(&format!("{}/ui/incidents/{id}", app.address)).await;
    assert!(
        b.url().await.contains("/ui/sign-in?next="),
        "{}",
        b.url().await
    );
    b.assert_accessible("the sign-in form").await;
    let field = b.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys(API_TOKEN).await.unwrap();
    b.click_to("form.signin button").await;
    assert_eq!(b.url().await, format!("{}/ui/incidents/{id}", app.address));

    // Assert: the diagnosis and the timeline in sentences; no button for a reader.
    let text = b.main_text().await;
    for says in [
        "The primary does not answer.",
        "Confidence: 90 %",
        "database (direct): connection refused",
        &format!("restart_primary on {TARGET}: waiting approval"),
        &format!("restart_primary on {TARGET} waits for a person's approval"),
        "an admin can approve or reject it here",
    ] {
        assert!(text.contains(says), "{says:?} not in:\n{text}");
    }
    assert!(!text.contains("{\""), "the timeline reads as JSON:\n{text}");
    assert!(!b.has("a.button.approve").await && !b.has("button.reject").await);
    b.assert_accessible("the incident page").await;

    b.click_to("nav a[href='/ui/incidents']").await;
    assert!(b.main_text().await.contains(&format!("#{id}")));
    b.assert_accessible("the incident list").await;
    b.screenshot("pages-incidents").await;
    b.click_to("nav a[href='/ui/restore-tests']").await;
    let text = b.main_text().await;
    assert!(text.contains("2 of 2 passed"), "{text}");
    assert!(text.contains("against an RTO of 30 min: met"), "{text}");
    b.assert_accessible("the restore tests page").await;
    b.screenshot("pages-restore-tests").await;
    b.click_to("nav a[href='/ui/backups']").await;
    b.assert_accessible("the manual backups page").await;

    // The cookie: HttpOnly, SameSite=Strict, not Secure on loopback, and no secret in it or
    // in any page.
    let cookies = b.client.get_all_cookies().await.unwrap();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert_eq!(c.name(), "br_session");
    assert_eq!(c.http_only(), Some(true));
    assert_eq!(format!("{:?}", c.same_site()), "Some(Strict)");
    assert_ne!(c.secure(), Some(true));
    let key = app.store.installation_key("unused").await.unwrap();
    for secret in [API_TOKEN, ADMIN_TOKEN, key.as_str()] {
        assert!(!c.value().contains(secret), "the cookie holds a secret");
        for page in [
            "/ui/incidents",
            &format!("/ui/incidents/{id}"),
            "/ui/restore-tests",
        ] {
            b.goto(&format!("{}{page}", app.address)).await;
            assert!(!b.source().await.contains(secret), "{page} shows a secret");
        }
    }

    // Signing out ends it: every page sends the browser back to the form.
    b.click_to("form.inline button").await;
    assert!(b.url().await.ends_with("/ui/sign-in"), "{}", b.url().await);
    for page in ["/ui/incidents", "/ui/restore-tests", "/ui/backups"] {
        b.goto(&format!("{}{page}", app.address)).await;
        assert!(
            b.url().await.contains("/ui/sign-in?next="),
            "{page}: {}",
            b.url().await
        );
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_approves_a_waiting_step_with_the_button_and_sees_the_gates_decision() {
    // Arrange: the primary is down; the live policy holds its restart for a person.
    let w = World::builder()
        .database_down()
        .job_failed_with_logs(&format!(
            "{FAILED_DUMP}pg_dump: error: connection to server failed: Connection refused\n"
        ))
        .policy(LIVE)
        .build()
        .await;
    let (id, restart) = w.restart_waiting_for_approval().await;
    let b = Browser::start().await;
    b.sign_in(&w.base, world::ADMIN).await;
    b.goto(&format!("{}/ui/incidents/{id}", w.base)).await;
    let step = format!("li#step-{restart}");
    assert!(
        b.has(&format!("{step} a.button.approve")).await,
        "{}",
        b.main_text().await
    );

    // A post without the CSRF token is refused, and decides nothing.
    strip_csrf(&b, &format!("{step} form")).await;
    b.click_to(&format!("{step} button.reject")).await;
    let text = b.main_text().await;
    assert!(text.contains("security token is missing"), "{text}");
    assert_eq!(
        world::step(&w.incident(id).await, "restart_primary")["state"],
        "waiting_approval"
    );

    // Act: Approve, confirm.
    b.goto(&format!("{}/ui/incidents/{id}", w.base)).await;
    b.click_to(&format!("{step} a.button.approve")).await;
    assert!(b.main_text().await.contains("An approval is not a pass"));
    b.assert_accessible("the approval's confirmation").await;
    b.click_to("form.decide button.approve").await;
    assert!(
        b.url()
            .await
            .contains(&format!("/ui/incidents/{id}?decided={restart}")),
        "{}",
        b.url().await
    );

    // Assert: the step moves on through the gate; the page shows who approved and the outcome.
    let mut shown = String::new();
    for _ in 0..180 {
        b.client.refresh().await.unwrap();
        shown = b
            .client
            .find(Locator::Css(&step))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if shown.contains(": succeeded")
            || shown.contains(": failed")
            || shown.contains(": refused")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        shown.contains("restart_primary") && shown.contains(": succeeded"),
        "{shown}"
    );
    assert!(shown.contains("Approved by admin (admin)"), "{shown}");
    let timeline = b
        .client
        .find(Locator::Css("ol.timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        timeline.contains("restart_primary on statefulset/"),
        "{timeline}"
    );
    assert!(timeline.contains("approved by admin (admin)"), "{timeline}");
    assert_eq!(
        world::patches(&w, "/statefulsets/postgres-primary").len(),
        1
    );
    b.assert_accessible("the incident page after the approval")
        .await;
    b.screenshot("pages-incident").await;
    b.close().await;
}
