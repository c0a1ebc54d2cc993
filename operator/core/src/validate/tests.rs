use super::*;
use appenv_api::AppEnvironmentSpec;

fn env(yaml: &str) -> AppEnvironment {
    let spec: AppEnvironmentSpec = serde_norway::from_str(yaml).expect("spec");
    AppEnvironment::new("shop-prod", spec)
}

fn messages(yaml: &str) -> Vec<String> {
    match validate(&env(yaml), &Settings::default()) {
        Ok(_) => Vec::new(),
        Err(Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn request(r: &ResourceRequirements, name: &str) -> String {
    r.requests
        .as_ref()
        .and_then(|m| m.get(name))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

#[test]
fn profiles_set_defaults_and_explicit_fields_win() {
    let prod = validate(
        &env("{app: shop, image: 'shop:1', workers: [{name: w}], redis: {}}"),
        &Settings::default(),
    )
    .expect("valid");
    assert_eq!((prod.web.replicas, prod.workers[0].replicas), (2, 2));
    assert_eq!(prod.deletion_policy, DeletionPolicy::Retain);
    assert_eq!(
        request(&prod.redis.as_ref().expect("redis").resources, "cpu"),
        "100m"
    );
    assert!(prod.guardrails.is_none());

    let preview = validate(
        &env("{app: shop, image: 'shop:1', profile: Preview, preview: {pullRequest: 9}, workers: [{name: w}], redis: {}}"),
        &Settings::default(),
    )
    .expect("valid");
    assert_eq!((preview.web.replicas, preview.workers[0].replicas), (1, 1));
    assert_eq!(preview.deletion_policy, DeletionPolicy::Delete);
    assert_eq!(
        request(&preview.redis.as_ref().expect("redis").resources, "cpu"),
        "50m"
    );
    assert_eq!(preview.namespace.name, "shop-pr-9");
    assert_eq!(
        preview.preview.as_ref().map(|p| p.ttl),
        Some(Duration::from_secs(72 * 3600))
    );
    assert!(preview.guardrails.is_some());

    let explicit = validate(
        &env("{app: shop, image: 'shop:1', profile: Preview, web: {replicas: 3}, database: {postgres: {}, deletionPolicy: Retain}}"),
        &Settings::default(),
    )
    .expect("valid");
    assert_eq!(explicit.web.replicas, 3);
    assert_eq!(explicit.deletion_policy, DeletionPolicy::Retain);
}

#[test]
fn an_embedded_database_means_one_recreated_web_pod() {
    let model = validate(
        &env("{app: dojo, image: 'd:1', database: {embedded: {engine: SQLite, path: /var/lib/app/app.db}}}"),
        &Settings::default(),
    )
    .expect("valid");
    assert_eq!((model.web.replicas, model.web.recreate), (1, true));
    let Some(DatabaseModel::Embedded(em)) = model.database else {
        panic!("embedded")
    };
    assert_eq!(em.mount_path, "/var/lib/app");
    assert_eq!(
        messages(
            "{app: dojo, image: 'd:1', web: {replicas: 2}, database: {embedded: {engine: SQLite, path: /d/a.db}}}"
        ),
        vec![
            "spec.web.replicas: must be 1 when spec.database.embedded is set (SQLite allows one writer)"
        ]
    );
}

#[test]
fn previews_get_a_host_under_the_preview_domain_or_must_name_one() {
    let yaml = "{app: shop, image: 's:1', profile: Preview, preview: {pullRequest: 42}, web: {ingress: {}}}";
    let settings = Settings {
        preview_domain: Some("preview.example.com".parse().expect("domain")),
        ..Settings::default()
    };
    let model = validate(&env(yaml), &settings).expect("valid");
    assert_eq!(
        model.web.ingress.map(|i| i.host),
        Some("shop-pr-42.preview.example.com".into())
    );
    assert_eq!(messages(yaml).len(), 1);
    assert!(messages(yaml)[0].starts_with("spec.web.ingress.host: is required"));
}

#[test]
fn hostile_input_is_reported_not_panicked_on() {
    let long = "x".repeat(5000);
    let yaml = format!(
        "{{app: 'ünïcødé-{long}', image: ' ', namespace: {{name: ''}}, preview: {{pullRequest: -1, ttl: '99999999999999999999d'}}, \
         web: {{port: -5, replicas: -2147483648, resources: {{requests: {{cpu: '1e999'}}}}}}, \
         database: {{embedded: {{engine: DuckDB, path: '/'}}, postgres: {{extensions: ['x; DROP TABLE users']}}}}}}"
    );
    let all = messages(&yaml);
    for path in [
        "spec.app",
        "spec.image",
        "spec.namespace.name",
        "spec.preview.pullRequest",
        "spec.preview.ttl",
        "spec.web.port",
        "spec.web.replicas",
        "spec.web.resources.requests.cpu",
        "spec.database",
    ] {
        assert!(
            all.iter().any(|m| m.starts_with(path)),
            "no error for {path}: {all:#?}"
        );
    }
    // Quoted input is cut short in messages.
    assert!(all.iter().all(|m| m.len() < 400), "{all:#?}");
}

#[test]
fn quoted_unusual_characters_stay_short_once_escaped() {
    // Each of these characters is written as `\u{3347a}` by `{:?}`: ten for one.
    let odd = "\u{3347a}".repeat(100);
    let all = messages(&format!(
        "{{app: a, image: b, redis: {{resources: {{requests: {{cpu: '{odd}'}}}}}}}}"
    ));
    let cpu = all
        .iter()
        .find(|m| m.starts_with("spec.redis.resources.requests.cpu"))
        .expect("the quantity is rejected");
    assert!(cpu.chars().count() < 200, "{cpu}");
}

#[test]
fn ttl_parses_units_and_rejects_the_rest() {
    assert_eq!(parse_ttl("72h"), Some(Duration::from_secs(72 * 3600)));
    assert_eq!(parse_ttl("7d"), Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(parse_ttl("30m"), Some(Duration::from_secs(1800)));
    for bad in ["", "h", "0h", "3 days", "1w", "-1h", "١h"] {
        assert_eq!(parse_ttl(bad), None, "{bad:?}");
    }
}

#[test]
fn ip_blocks_parse_as_the_api_server_reads_them() {
    use egress::{is_inside, parse_cidr};
    let block = |text: &str| parse_cidr(text).map(|b| (b.network().to_string(), b.prefix_len()));
    assert_eq!(block("0.0.0.0/0"), Some(("0.0.0.0".into(), 0)));
    assert_eq!(block("10.0.0.0/8"), Some(("10.0.0.0".into(), 8)));
    assert_eq!(block("2001:db8::/32"), Some(("2001:db8::".into(), 32)));
    assert_eq!(block("::/0"), Some(("::".into(), 0)));
    // Host bits are allowed and ignored, as by Go's net.ParseCIDR.
    assert_eq!(block("10.1.2.3/8"), Some(("10.0.0.0".into(), 8)));
    assert_eq!(block("010.0.0.0/08"), Some(("10.0.0.0".into(), 8)));
    assert_eq!(block("::/000"), Some(("::".into(), 0)));
    for bad in [
        "",
        "10.0.0.0",
        "10.0.0.0/",
        "10.0.0.0/33",
        "::/129",
        "10.0.0/8",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/0008",
        "example.com/8",
        "10.0.0.0/8/8",
        " 10.0.0.0/8",
    ] {
        assert_eq!(parse_cidr(bad), None, "{bad:?}");
    }
    let net = |text: &str| parse_cidr(text).expect(text);
    // Strictly smaller and inside, of the same family.
    assert!(is_inside(&net("10.1.2.3/32"), &net("10.0.0.0/8")));
    assert!(is_inside(&net("10.1.0.0/16"), &net("10.1.2.3/8")));
    assert!(!is_inside(&net("10.2.0.0/16"), &net("10.1.0.0/16")));
    assert!(!is_inside(&net("10.1.2.3/32"), &net("10.2.0.0/16")));
    assert!(!is_inside(&net("10.0.0.0/8"), &net("10.0.0.0/8")));
    assert!(!is_inside(&net("::/64"), &net("0.0.0.0/0")));
    assert!(is_inside(&net("2001:db8:1::/48"), &net("2001:db8::/32")));
}

fn at_in(found: &[String], prefix: &str) -> usize {
    found.iter().filter(|m| m.starts_with(prefix)).count()
}

#[test]
fn egress_rules_name_the_rule_and_the_field() {
    let found = messages(
        "app: shop\nimage: i\nnamespace:\n  egress:\n  - cidr: 0.0.0.0/0\n    except: [10.0.0.0/8, 172.16.0.0/12]\n    ports: [27017, 5432]\n  - cidr: 2001:db8::/32\n    except: [2001:db8:1::/48]\n",
    );
    assert!(found.is_empty(), "{found:?}");
    let found = messages(
        "app: shop\nimage: i\nnamespace:\n  egress:\n  - cidr: 10.0.0.0/8\n    except: [10.0.0.0/8, 11.0.0.0/16, '::/64', nonsense]\n    ports: [65536, -1]\n  - cidr: 300.0.0.0/8\n    except: [10.0.0.0/16]\n",
    );
    let at = |path: &str| at_in(&found, path);
    // Equal, outside, of the other family, unreadable.
    for i in 0..4 {
        assert_eq!(
            at(&format!("spec.namespace.egress[0].except[{i}]: ")),
            1,
            "{found:?}"
        );
    }
    assert_eq!(
        at("spec.namespace.egress[0].ports[0]: 65536 "),
        1,
        "{found:?}"
    );
    assert_eq!(at("spec.namespace.egress[0].ports[1]: -1 "), 1, "{found:?}");
    assert_eq!(
        at("spec.namespace.egress[1].cidr: \"300.0.0.0/8\" "),
        1,
        "{found:?}"
    );
    // An except of an unreadable block is not judged twice.
    assert_eq!(at("spec.namespace.egress[1].except"), 0, "{found:?}");
    assert_eq!(found.len(), 7, "{found:?}");

    let many = format!(
        "app: shop\nimage: i\nnamespace:\n  egress:\n{}",
        "  - cidr: 10.0.0.0/8\n    ports: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33]\n"
            .repeat(33)
    );
    let found = messages(&many);
    assert_eq!(
        at_in(&found, "spec.namespace.egress: at most 32"),
        1,
        "{found:?}"
    );
    assert_eq!(
        at_in(&found, "spec.namespace.egress[32].ports: at most 32"),
        1,
        "{found:?}"
    );
    assert_eq!(found.len(), 34, "{found:?}");
}

/// Messages of `yaml` validated by an operator that copies from `allowed`.
fn copy_messages(yaml: &str, allowed: &[&str]) -> Result<Model, Vec<String>> {
    let settings = Settings {
        copy_from_namespaces: allowed
            .iter()
            .map(|ns| crate::settings::DnsLabel::parse_copy_source(ns).expect("namespace"))
            .collect(),
        wildcard_tls: Some(crate::settings::SecretRef::parse("ingress/wildcard").expect("ref")),
        preview_domain: Some("preview.example.org".parse().expect("domain")),
        ..Settings::default()
    };
    validate(&env(yaml), &settings)
        .map_err(|Invalid(errors)| errors.iter().map(ToString::to_string).collect())
}

#[test]
fn copies_come_only_from_namespaces_the_operator_allows() {
    let yaml = "{app: shop, image: 'shop:1', namespace: {copy: [{namespace: vault-sync, name: shop-secrets}, {kind: ConfigMap, namespace: vault-sync, name: flags}]}}";
    let model = copy_messages(yaml, &["vault-sync"]).expect("valid");
    let copies: Vec<(CopyKind, &str, &str, &str)> = model
        .namespace
        .copies
        .iter()
        .map(|c| {
            (
                c.kind,
                c.path.as_str(),
                c.namespace.as_str(),
                c.name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        copies,
        [
            (
                CopyKind::Secret,
                "spec.namespace.copy[0]",
                "vault-sync",
                "shop-secrets"
            ),
            (
                CopyKind::ConfigMap,
                "spec.namespace.copy[1]",
                "vault-sync",
                "flags"
            ),
        ]
    );

    let refused = copy_messages(yaml, &["shared", "other"]).expect_err("not allowed");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(
        refused[0],
        "spec.namespace.copy[0].namespace: \"vault-sync\": not a namespace this operator copies \
         from (allowed: shared, other; its --copy-from-namespace flag, the chart's \
         copyFromNamespaces)"
    );
    let none = copy_messages(yaml, &[]).expect_err("nothing allowed");
    assert!(
        none[0].contains("this operator copies from no namespace"),
        "{none:?}"
    );
}

#[test]
fn a_copy_may_not_take_the_own_namespace_an_own_name_or_a_name_twice() {
    let refused = copy_messages(
        "{app: shop, image: 'shop:1', namespace: {name: vault-sync, copy: [\
         {namespace: vault-sync, name: a}, \
         {namespace: shared, name: shop-postgres-credentials}, \
         {kind: ConfigMap, namespace: shared, name: shop-env}, \
         {namespace: shared, name: Bad_Name}, \
         {namespace: shared, name: twice}, {namespace: other, name: twice}, \
         {kind: ConfigMap, namespace: shared, name: twice}]}}",
        &["vault-sync", "shared", "other"],
    )
    .expect_err("refused");
    assert_eq!(
        refused,
        [
            "spec.namespace.copy[0].namespace: \"vault-sync\" is the environment's own namespace: nothing to copy",
            "spec.namespace.copy[1].name: Secret \"shop-postgres-credentials\" is one appenv writes into this environment itself",
            "spec.namespace.copy[2].name: ConfigMap \"shop-env\" is one appenv writes into this environment itself",
            "spec.namespace.copy[3].name: \"Bad_Name\" must be a DNS subdomain: lower-case letters, digits, '-' and '.', at most 253 characters",
            "spec.namespace.copy[5].name: Secret \"twice\" is copied twice (one object per name in a namespace)",
        ]
    );
    // A preview gets the wildcard certificate's copy: that name is taken too.
    let preview = copy_messages(
        "{app: shop, image: 'shop:1', preview: {pullRequest: 4}, namespace: {copy: [{namespace: shared, name: wildcard}]}}",
        &["shared"],
    )
    .expect_err("refused");
    assert!(
        preview[0].contains("Secret \"wildcard\" is one appenv writes"),
        "{preview:?}"
    );
}

#[test]
fn own_names_are_the_names_the_builders_give() {
    let model = validate(
        &env("{app: shop, image: 'shop:1', database: {postgres: {}}}"),
        &Settings::default(),
    )
    .expect("valid");
    let children = crate::build::build(&model, &crate::build::Inputs::default());
    let postgres = children.postgres.expect("postgres");
    assert_eq!(
        copy::own_names(&model.app),
        [
            (
                CopyKind::ConfigMap,
                children.config.metadata.name.clone().expect("name")
            ),
            (
                CopyKind::ConfigMap,
                postgres.init.metadata.name.clone().expect("name")
            ),
            (
                CopyKind::Secret,
                postgres.credentials.metadata.name.clone().expect("name")
            ),
        ]
    );
}

#[test]
fn previews_never_adopt_and_nothing_takes_the_operators_namespace() {
    let settings = Settings {
        operator_namespace: Some(crate::settings::DnsLabel::parse("appenv-system").expect("ns")),
        preview_domain: Some("preview.example.org".parse().expect("domain")),
        ..Settings::default()
    };
    let refused = |yaml: &str| match validate(&env(yaml), &settings) {
        Ok(_) => panic!("accepted: {yaml}"),
        Err(Invalid(errors)) => errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_eq!(
        refused("{app: shop, image: 'shop:1', namespace: {name: appenv-system, adopt: true}}"),
        [
            "spec.namespace.name: \"appenv-system\" is the operator's own namespace: no environment's, owned or adopted"
        ]
    );
    assert_eq!(
        refused(
            "{app: shop, image: 'shop:1', preview: {pullRequest: 3}, namespace: {name: team-a, adopt: true}}"
        ),
        [
            "spec.namespace.adopt: a preview never adopts a namespace: it gets one of its own (<app>-pr-<number>)"
        ]
    );
    assert_eq!(
        refused("{app: shop, image: 'shop:1', profile: Preview, namespace: {adopt: true}}"),
        [
            "spec.namespace.adopt: a preview never adopts a namespace: it gets one of its own (<app>-pr-<number>)"
        ]
    );
    assert!(
        refused("{app: shop, image: 'shop:1', namespace: {guardrails: false}}")[0]
            .starts_with("spec.namespace.guardrails: may be false only with spec.namespace.adopt")
    );
    // Pod Security labels: always on an owned namespace, on an adopted one only when asked.
    let pod_security = |yaml: &str| {
        validate(&env(yaml), &settings)
            .expect("valid")
            .namespace
            .pod_security
    };
    assert!(pod_security("{app: shop, image: 'shop:1'}"));
    assert!(!pod_security(
        "{app: shop, image: 'shop:1', namespace: {name: team-a, adopt: true}}"
    ));
    assert!(pod_security(
        "{app: shop, image: 'shop:1', namespace: {name: team-a, adopt: true, guardrails: true}}"
    ));
}

#[test]
fn previews_run_only_the_images_the_operator_allows() {
    let settings = Settings {
        preview_images: ["ghcr.io/acme/*", "redis:7.4-alpine"]
            .iter()
            .map(|p| crate::settings::ImagePattern::parse(p).expect("pattern"))
            .collect(),
        preview_domain: Some("preview.example.org".parse().expect("domain")),
        ..Settings::default()
    };
    let preview = "{app: shop, image: 'ghcr.io/acme/shop:pr-3', preview: {pullRequest: 3}, \
                   workers: [{name: w}, {name: x, image: 'docker.io/evil/miner:1'}], \
                   redis: {image: 'redis:7.4-alpine'}, database: {postgres: {image: 'evil/pg:16'}}}";
    let Err(Invalid(errors)) = validate(&env(preview), &settings) else {
        panic!("accepted")
    };
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "spec.workers[1].image: \"docker.io/evil/miner:1\" is not an image previews may run (allowed: ghcr.io/acme/*, redis:7.4-alpine; the operator's --preview-image, the chart's previews.allowedImages)",
            "spec.database.postgres.image: \"evil/pg:16\" is not an image previews may run (allowed: ghcr.io/acme/*, redis:7.4-alpine; the operator's --preview-image, the chart's previews.allowedImages)",
        ]
    );
    let evil_main = "{app: shop, image: 'evil.io/shop:1', preview: {pullRequest: 3}}";
    let Err(Invalid(errors)) = validate(&env(evil_main), &settings) else {
        panic!("accepted")
    };
    assert_eq!(errors[0].path, "spec.image");
    // Allowed images come up; default images are the operator's; production is not bound.
    validate(
        &env("{app: shop, image: 'ghcr.io/acme/shop:pr-3', preview: {pullRequest: 3}, redis: {}, database: {postgres: {}}}"),
        &settings,
    )
    .expect("allowed");
    validate(&env("{app: shop, image: 'evil.io/shop:1'}"), &settings).expect("production");
    validate(&env(evil_main), &Settings::default()).expect("no list: any image");
}

#[test]
fn autoscaling_needs_redis_bounds_in_order_and_neither_singleton_nor_replicas() {
    let queue = "queue: {type: RQ, names: [default]}";
    let valid = validate(
        &env(&format!(
            "{{app: shop, image: 'shop:1', redis: {{}}, workers: [{{name: rq, autoscaling: {{minReplicas: 2, maxReplicas: 8, {queue}}}}}]}}"
        )),
        &Settings::default(),
    )
    .expect("valid");
    let autoscaling = valid.workers[0].autoscaling.as_ref().expect("autoscaling");
    assert_eq!((autoscaling.min_replicas, autoscaling.max_replicas), (2, 8));
    assert_eq!(autoscaling.target_length, 5, "the default target");
    assert_eq!(valid.workers[0].replicas, 2, "starts from the minimum");

    let invalid = messages(&format!(
        "{{app: shop, image: 'shop:1', workers: [\
           {{name: beat, singleton: true, replicas: 1, autoscaling: {{minReplicas: 0, maxReplicas: 101, {queue}}}}}, \
           {{name: rq, autoscaling: {{minReplicas: 5, maxReplicas: 2, queue: {{type: Celery, names: ['a b'], targetLength: 0}}}}}}]}}"
    ));
    assert_eq!(
        invalid,
        [
            "spec.workers[0].autoscaling: not allowed for a singleton worker (it must never run twice)",
            "spec.workers[0].autoscaling: set replicas or autoscaling, not both (the autoscaler sets the replicas)",
            "spec.workers[0].autoscaling: needs spec.redis (the queue is in the environment's Redis)",
            "spec.workers[0].autoscaling.minReplicas: must be between 1 and 100",
            "spec.workers[0].autoscaling.maxReplicas: must be at most 100",
            "spec.workers[1].autoscaling: needs spec.redis (the queue is in the environment's Redis)",
            "spec.workers[1].autoscaling.maxReplicas: must be at least minReplicas",
            "spec.workers[1].autoscaling.queue.names[0]: must be 1 to 200 printable characters without spaces",
            "spec.workers[1].autoscaling.queue.targetLength: must be between 1 and 100000",
        ]
    );
}

#[test]
fn backups_name_the_field_and_the_rule_and_refuse_what_a_hostile_author_could_use() {
    let with = |backup: &str| {
        messages(&format!(
            "{{app: shop, image: 'shop:1', database: {{postgres: {{}}}}, backup: {backup}}}"
        ))
    };
    let s3 = |extra: &str| {
        format!("{{destination: {{s3: {{bucket: shop-backups, credentialsSecret: s3{extra}}}}}}}")
    };
    assert_eq!(with(&s3("")), Vec::<String>::new());
    for (backup, want) in [
        (
            "{schedule: '61 * * * *', destination: {volume: {size: 1Gi}}}".to_owned(),
            "spec.backup.schedule: minute",
        ),
        (
            "{keep: 0, destination: {volume: {size: 1Gi}}}".to_owned(),
            "spec.backup.keep: must be between 1 and 1000",
        ),
        (
            "{destination: {}}".to_owned(),
            "spec.backup.destination: set exactly one of s3, volume or volumeSnapshot",
        ),
        (
            "{destination: {volumeSnapshot: {className: csi-snapshots}}}".to_owned(),
            "spec.backup.destination.volumeSnapshot: needs spec.database.embedded",
        ),
        (
            s3(", endpoint: 'https://key:secret@minio:9000'"),
            "spec.backup.destination.s3.endpoint: may not carry credentials",
        ),
        (
            s3(", prefix: 'a/../other-env'"),
            "spec.backup.destination.s3.prefix: must be path segments",
        ),
        (
            s3(", region: 'EU West'"),
            "spec.backup.destination.s3.region: must be a region name",
        ),
        (
            "{destination: {s3: {bucket: Shop_Backups, credentialsSecret: s3}}}".to_owned(),
            "spec.backup.destination.s3.bucket: \"Shop_Backups\" must be 3 to 63",
        ),
        (
            "{destination: {s3: {bucket: shop, credentialsSecret: '../kube-system/x'}}}".to_owned(),
            "spec.backup.destination.s3.credentialsSecret: must be the name of a Secret in the environment's namespace",
        ),
    ] {
        let found = with(&backup);
        assert!(
            found.iter().any(|m| m.starts_with(want)),
            "{backup}: {found:?}"
        );
    }
    let external = messages(
        "{app: shop, image: 'shop:1', database: {external: {secretRef: {name: db, key: url}}}, backup: {destination: {volume: {size: 1Gi}}}}",
    );
    assert!(
        external
            .iter()
            .any(|m| m.starts_with("spec.backup: needs spec.database.postgres")),
        "{external:?}"
    );
    // Defaults: 7 kept, before migrations, the operator's agent image.
    let model = validate(
        &env(&format!(
            "{{app: shop, image: 'shop:1', database: {{postgres: {{}}}}, backup: {}}}",
            s3("")
        )),
        &Settings {
            agent_image: "registry.example/appenv:9".to_owned(),
            ..Settings::default()
        },
    )
    .expect("valid");
    assert_eq!(model.agent_image, "registry.example/appenv:9");
    let backup = model.backup.expect("backup");
    assert_eq!((backup.keep, backup.before_migrations), (7, true));
}

#[test]
fn a_volume_snapshot_destination_names_a_class_and_needs_an_embedded_database() {
    let embedded = |class: &str| {
        messages(&format!(
            "{{app: dojo, image: 'dojo:1', database: {{embedded: {{engine: DuckDB, path: /data/l.duckdb}}}}, backup: {{destination: {{volumeSnapshot: {{className: '{class}'}}}}}}}}"
        ))
    };
    assert_eq!(embedded("csi-snapshots"), Vec::<String>::new());
    assert!(
        embedded("Bad Class").iter().any(|m| m.starts_with(
            "spec.backup.destination.volumeSnapshot.className: must be the name of a VolumeSnapshotClass"
        )),
        "{:?}",
        embedded("Bad Class")
    );
}

#[test]
fn a_restore_from_a_url_is_https_or_checksummed_and_carries_no_credentials() {
    let sha = "a".repeat(64);
    let with = |restore: &str| {
        messages(&format!(
            "{{app: shop, image: 'shop:1', database: {{postgres: {{}}, restore: {restore}}}}}"
        ))
    };
    for ok in [
        "{fromUrl: {url: 'https://dumps.example/shop.dump?X-Amz-Signature=1'}}".to_owned(),
        format!("{{fromUrl: {{url: 'http://10.0.0.5:8080/shop.dump', sha256: '{sha}'}}}}"),
        format!(
            "{{fromUrl: {{urlSecret: dump-url, sha256: '{}'}}}}",
            "AB".repeat(32)
        ),
    ] {
        assert_eq!(with(&ok), Vec::<String>::new(), "{ok}");
    }
    for (restore, want) in [
        (
            "{fromUrl: {url: 'http://dumps.example/shop.dump'}}".to_owned(),
            "spec.database.restore.fromUrl.url: an http:// URL needs sha256",
        ),
        (
            "{fromUrl: {url: 'https://user:secret@dumps.example/shop.dump'}}".to_owned(),
            "spec.database.restore.fromUrl.url: must not carry credentials",
        ),
        (
            "{fromUrl: {url: 'file:///etc/shadow'}}".to_owned(),
            "spec.database.restore.fromUrl.url: the scheme \"file\" is not supported",
        ),
        (
            "{fromUrl: {url: 'https:///x'}}".to_owned(),
            "spec.database.restore.fromUrl.url: \"https:///x\" is not a URL",
        ),
        (
            "{fromUrl: {url: 'https://h/x', sha256: 'abc'}}".to_owned(),
            "spec.database.restore.fromUrl.sha256: must be 64 hexadecimal digits",
        ),
        (
            "{fromUrl: {url: 'https://h/x', urlSecret: s}}".to_owned(),
            "spec.database.restore.fromUrl: set exactly one of url or urlSecret",
        ),
        (
            "{fromUrl: {urlSecret: 'Bad/Name'}}".to_owned(),
            "spec.database.restore.fromUrl.urlSecret: must be the name of a Secret",
        ),
        (
            "{fromUrl: {url: 'https://h/x'}, credentialsSecret: s3}".to_owned(),
            "spec.database.restore.credentialsSecret: goes with fromEnvironment",
        ),
        (
            "{fromUrl: {url: 'https://h/x'}, fromEnvironment: shop-prod, credentialsSecret: s3}"
                .to_owned(),
            "spec.database.restore: set exactly one of fromEnvironment or fromUrl",
        ),
        (
            "{fromEnvironment: shop-prod}".to_owned(),
            "spec.database.restore.credentialsSecret: required with fromEnvironment",
        ),
    ] {
        let found = with(&restore);
        assert!(
            found.iter().any(|m| m.starts_with(want)),
            "{restore}: {found:?}"
        );
    }
}

#[test]
fn a_dump_url_is_shown_without_credentials_query_or_fragment() {
    use crate::validate::shown_url;
    assert_eq!(
        shown_url("https://u:p@dumps.example:8443/a/shop.dump?X-Amz-Signature=s3cr3t#x"),
        "https://dumps.example:8443/a/shop.dump"
    );
    assert_eq!(shown_url("https://h"), "https://h");
    let model = crate::validate::DumpModel {
        url: crate::validate::DumpUrl::Secret("dump-url".into()),
        sha256: None,
    };
    assert_eq!(model.describe(), "the dump at the URL of Secret dump-url");
}

#[test]
fn a_restore_names_another_environment_a_backup_and_a_secret_of_its_own() {
    let with = |restore: &str| {
        messages(&format!(
            "{{app: shop, image: 'shop:1', database: {{postgres: {{}}, restore: {restore}}}}}"
        ))
    };
    assert_eq!(
        with(
            "{fromEnvironment: shop-staging, credentialsSecret: s3-read, seed: {command: [blank]}}"
        ),
        Vec::<String>::new()
    );
    for (restore, want) in [
        (
            "{fromEnvironment: shop-staging, credentialsSecret: s3, backup: '../../x'}",
            "spec.database.restore.backup: \"../../x\" must be `latest` or a backup id",
        ),
        (
            "{fromEnvironment: shop-staging, credentialsSecret: 's3 key'}",
            "spec.database.restore.credentialsSecret: must be the name of a Secret",
        ),
        ("{fromEnvironment: shop-staging, credentialsSecret: s3}", ""),
        (
            "{fromEnvironment: Shop/Prod, credentialsSecret: s3}",
            "spec.database.restore.fromEnvironment: must be the name of an AppEnvironment",
        ),
        (
            "{fromEnvironment: shop-staging, credentialsSecret: s3, seed: {command: []}}",
            "spec.database.restore.seed.command: must be a non-empty command",
        ),
    ] {
        let found = with(restore);
        if want.is_empty() {
            assert!(found.is_empty(), "{restore}: {found:?}");
        } else {
            assert!(
                found.iter().any(|m| m.starts_with(want)),
                "{restore}: {found:?}"
            );
        }
    }
    // The environment itself is no source: `appenv restore` restores in place.
    let env = AppEnvironment::new(
        "shop-prod",
        serde_norway::from_str(
            "{app: shop, image: 'shop:1', database: {postgres: {}, restore: {fromEnvironment: shop-prod, credentialsSecret: s3}}}",
        )
        .expect("spec"),
    );
    let Err(Invalid(errors)) = validate(&env, &Settings::default()) else {
        panic!("its own backups");
    };
    assert!(
        errors[0]
            .to_string()
            .contains("must be another environment")
    );
    assert!(crate::validate::backup_ref("20261201-030000-000"));
    assert!(!crate::validate::backup_ref("20261201-030000-00x"));
}

#[test]
fn sleep_periods_name_the_field_and_previews_take_the_operators_default() {
    let activator =
        crate::settings::ServiceRef::parse("appenv-system/appenv-activator:80").expect("a service");
    let settings = Settings {
        preview_sleep_after: Some(std::time::Duration::from_secs(1800)),
        activator_service: Some(activator.clone()),
        ..Settings::default()
    };
    let model = |yaml: &str| validate(&env(yaml), &settings);
    let preview = "{app: shop, image: 'shop:1', preview: {pullRequest: 7}, web: {ingress: {host: shop.example}}";
    let sleep_after = |yaml: String| model(&yaml).map(|m| m.sleep_after);
    assert_eq!(
        sleep_after(format!("{preview}}}")),
        Ok(Some(std::time::Duration::from_secs(1800))),
        "a preview's default"
    );
    assert_eq!(
        sleep_after(format!("{preview}, sleep: {{afterIdle: never}}}}")),
        Ok(None)
    );
    assert_eq!(
        sleep_after(format!("{preview}, sleep: {{afterIdle: 2h}}}}")),
        Ok(Some(std::time::Duration::from_secs(7200)))
    );
    assert_eq!(
        model("{app: shop, image: 'shop:1'}").map(|m| m.sleep_after),
        Ok(None),
        "other profiles never sleep unless they ask"
    );
    for (after, rule) in [
        ("90s", "is shorter than 2m"),
        ("soon", "must be `never` or a positive number"),
        ("0m", "must be `never` or a positive number"),
    ] {
        let Err(Invalid(all)) = model(&format!("{preview}, sleep: {{afterIdle: {after}}}}}"))
        else {
            panic!("{after} accepted");
        };
        assert!(
            all.iter()
                .map(ToString::to_string)
                .any(|m| m.starts_with("spec.sleep.afterIdle:") && m.contains(rule)),
            "{after}: {all:?}"
        );
    }
    // The activator is what a sleeping environment's Ingress reaches: without one, refused
    // (nothing would wake it), and previews do not sleep by default.
    let with = model(&format!("{preview}, sleep: {{afterIdle: 2h}}}}")).expect("valid");
    assert_eq!(with.activator, Some(activator));
    let all = messages(&format!("{preview}, sleep: {{afterIdle: 2h}}}}"));
    assert!(
        all.iter()
            .any(|m| m.starts_with("spec.sleep.afterIdle: this operator has no activator")),
        "{all:?}"
    );
    let no_activator = Settings {
        preview_sleep_after: Some(std::time::Duration::from_secs(1800)),
        ..Settings::default()
    };
    let preview_model = validate(&env(&format!("{preview}}}")), &no_activator).expect("valid");
    assert_eq!(
        (preview_model.sleep_after, preview_model.activator),
        (None, None)
    );
    let never = model(&format!("{preview}, sleep: {{afterIdle: never}}}}")).expect("valid");
    assert_eq!(
        never.activator, None,
        "a preview that never sleeps is reached directly"
    );
}
