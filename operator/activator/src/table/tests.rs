use super::*;
use serde_json::json;

fn env(name: &str, url: &str, namespace: &str) -> Environment {
    object(json!({
        "metadata": {"name": name, "resourceVersion": "1"},
        "status": {"url": url, "namespace": namespace, "phase": "Ready"},
    }))
    .environment()
}

fn object(value: serde_json::Value) -> EnvironmentObject {
    serde_json::from_value(value).expect("an AppEnvironment")
}

fn pod(namespace: &str, name: &str, environment: &str, ready: bool, ip: &str) -> WebPod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace,
            "labels": {"appenv.dev/environment": environment}},
        "spec": {"containers": [{"name": "web", "image": "app",
            "ports": [{"name": "metrics", "containerPort": 9000},
                      {"name": "http", "containerPort": 8000}]}]},
        "status": {"podIP": ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    }))
    .expect("a Pod");
    WebPod::from_pod(&pod).expect("labelled")
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("an address")
}

#[test]
fn reads_an_environment_from_its_object_whatever_else_it_holds() {
    let sleeping = object(json!({
        "metadata": {"name": "shop-pr-7", "resourceVersion": "42",
            "annotations": {"appenv.dev/last-request": "2026-12-02T10:00:00Z"}},
        "spec": {"app": "shop", "someFieldOfALaterRelease": true},
        "status": {"url": "https://Shop-PR-7.preview.example.com/", "namespace": "shop-pr-7",
            "phase": "Sleeping", "sleep": {"since": "2026-12-02T11:00:00Z", "reason": "idle"},
            "conditions": []},
    }))
    .environment();
    assert_eq!(
        sleeping,
        Environment {
            name: "shop-pr-7".to_owned(),
            host: Some("shop-pr-7.preview.example.com".to_owned()),
            namespace: Some("shop-pr-7".to_owned()),
            sleeping: true,
            sleep_since: decide::parse("2026-12-02T11:00:00Z"),
            last_request: decide::parse("2026-12-02T10:00:00Z"),
            resource_version: Some("42".to_owned()),
        }
    );
    let garbled = object(json!({
        "metadata": {"name": "x", "annotations": {"appenv.dev/last-request": "yesterday"}},
    }));
    assert_eq!(
        garbled.environment().last_request,
        None,
        "overwritten as if missing"
    );
    let bare = object(json!({"metadata": {"name": "new"}})).environment();
    assert_eq!(
        (bare.host, bare.namespace, bare.sleeping),
        (None, None, false)
    );
}

#[test]
fn a_pod_is_a_backend_only_while_ready_with_an_ip_and_an_http_port() {
    assert_eq!(
        pod("ns", "web-1", "shop", true, "10.0.0.7").backend,
        Some(addr("10.0.0.7:8000"))
    );
    assert_eq!(pod("ns", "web-1", "shop", false, "10.0.0.7").backend, None);
    assert_eq!(pod("ns", "web-1", "shop", true, "").backend, None);
    let deleting: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "ns", "deletionTimestamp": "2026-12-02T10:00:00Z",
            "labels": {"appenv.dev/environment": "shop"}},
        "spec": {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8000}]}]},
        "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .expect("a Pod");
    assert_eq!(WebPod::from_pod(&deleting).map(|p| p.backend), Some(None));
    let unnamed_port: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "ns", "labels": {"appenv.dev/environment": "shop"}},
        "spec": {"containers": [{"name": "web", "ports": [{"containerPort": 8000}]}]},
        "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .expect("a Pod");
    assert_eq!(
        WebPod::from_pod(&unnamed_port).map(|p| p.backend),
        Some(None)
    );
    let unlabelled: Pod =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "ns"}}))
            .expect("a Pod");
    assert_eq!(WebPod::from_pod(&unlabelled), None);
}

#[test]
fn routes_a_host_to_the_ready_pods_of_its_environment_in_its_namespace() {
    let mut table = Table::default();
    let shop = env("shop", "https://shop.example.com/", "shop-ns");
    assert_eq!(
        table.environment_event(Event::Apply(shop.clone())),
        ["shop"]
    );
    assert_eq!(
        table.route("shop.example.com"),
        Route::Environment(shop.clone(), vec![])
    );
    assert_eq!(table.route("other.example.com"), Route::Unknown);

    assert_eq!(
        table.pod_event(Event::Apply(pod("shop-ns", "b", "shop", true, "10.0.0.2"))),
        ["shop"]
    );
    table.pod_event(Event::Apply(pod("shop-ns", "a", "shop", true, "10.0.0.1")));
    table.pod_event(Event::Apply(pod("shop-ns", "c", "shop", false, "10.0.0.3")));
    // The same label in another namespace is not this environment's Pod.
    table.pod_event(Event::Apply(pod(
        "elsewhere",
        "d",
        "shop",
        true,
        "10.0.0.4",
    )));
    let ready = vec![addr("10.0.0.1:8000"), addr("10.0.0.2:8000")];
    assert_eq!(
        table.route("shop.example.com"),
        Route::Environment(shop.clone(), ready)
    );

    assert_eq!(
        table.pod_event(Event::Apply(pod("shop-ns", "b", "shop", true, "10.0.0.2"))),
        Vec::<String>::new(),
        "unchanged: nobody to tell"
    );
    table.pod_event(Event::Delete(pod("shop-ns", "a", "shop", true, "10.0.0.1")));
    table.pod_event(Event::Apply(pod("shop-ns", "b", "shop", false, "10.0.0.2")));
    assert_eq!(
        table.route("shop.example.com"),
        Route::Environment(shop.clone(), vec![])
    );

    table.environment_event(Event::Delete(shop));
    assert_eq!(table.route("shop.example.com"), Route::Unknown);
}

#[test]
fn a_host_claimed_by_two_environments_is_ambiguous_until_one_lets_go() {
    let mut table = Table::default();
    table.environment_event(Event::Apply(env("a", "https://shop.example.com/", "a")));
    table.environment_event(Event::Apply(env("b", "http://SHOP.example.com:8080/", "b")));
    assert_eq!(
        table.route("shop.example.com"),
        Route::Ambiguous(vec!["a".to_owned(), "b".to_owned()])
    );
    let moved = env("b", "https://b.example.com/", "b");
    table.environment_event(Event::Apply(moved.clone()));
    assert!(matches!(table.route("shop.example.com"), Route::Environment(e, _) if e.name == "a"));
    assert_eq!(
        table.route("b.example.com"),
        Route::Environment(moved, vec![])
    );
}

#[test]
fn a_relist_keeps_routing_and_drops_what_it_did_not_list() {
    let mut table = Table::default();
    let (a, b) = (
        env("a", "https://a.example.com/", "a"),
        env("b", "https://b.example.com/", "b"),
    );
    table.environment_event(Event::Apply(a.clone()));
    table.environment_event(Event::Apply(b.clone()));
    table.pod_event(Event::Apply(pod("a", "web-1", "a", true, "10.0.0.1")));
    table.pod_event(Event::Apply(pod("b", "web-1", "b", true, "10.0.0.2")));

    table.environment_event(Event::Init);
    table.pod_event(Event::Init);
    table.environment_event(Event::InitApply(a.clone()));
    table.pod_event(Event::InitApply(pod("a", "web-1", "a", true, "10.0.0.1")));
    assert!(
        matches!(table.route("b.example.com"), Route::Environment(_, pods) if pods.len() == 1),
        "still routed during the relist"
    );
    assert_eq!(table.environment_event(Event::InitDone), ["b"]);
    assert_eq!(table.pod_event(Event::InitDone), ["b"]);
    assert_eq!(table.route("b.example.com"), Route::Unknown);
    assert_eq!(
        table.route("a.example.com"),
        Route::Environment(a, vec![addr("10.0.0.1:8000")])
    );
}
