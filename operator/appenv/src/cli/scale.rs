//! `appenv scale ENV COMPONENT=N...`: set the replicas of web or of workers in the spec (the
//! operator then scales their Deployments, and reverts a `kubectl scale` to what the spec
//! says). An autoscaled worker is refused: its bounds are `autoscaling.minReplicas` and
//! `maxReplicas`.

use anyhow::{Context as _, bail};
use appenv_api::names::Component;
use appenv_api::{AppEnvironment, MAX_AUTOSCALED_REPLICAS};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// The AppEnvironment's name.
    pub environment: String,
    /// `web=N` or `<worker>=N` (N from 0 to 100), one or more.
    #[arg(required = true, value_name = "COMPONENT=N")]
    pub replicas: Vec<String>,
}

/// One `COMPONENT=N`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub component: String,
    pub replicas: i32,
}

/// Parse `COMPONENT=N`: a name, `=`, and a decimal number from 0 to 100, nothing else.
pub fn parse(text: &str) -> Result<Request, String> {
    let Some((component, number)) = text.split_once('=') else {
        return Err(format!(
            "{text:?}: expected COMPONENT=N, e.g. web=3 or celery=2"
        ));
    };
    if component.is_empty() {
        return Err(format!(
            "{text:?}: the component is missing (web or a worker's name)"
        ));
    }
    let named = format!("{component}: ");
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || number.len() > 3 {
        return Err(format!(
            "{named}{number:?} is not a number of replicas (0 to {MAX_AUTOSCALED_REPLICAS})"
        ));
    }
    let replicas: i32 = number
        .parse()
        .map_err(|_| format!("{named}{number:?} is not a number"))?;
    if replicas > MAX_AUTOSCALED_REPLICAS {
        return Err(format!(
            "{named}{replicas} replicas: at most {MAX_AUTOSCALED_REPLICAS}"
        ));
    }
    Ok(Request {
        component: component.to_owned(),
        replicas,
    })
}

/// The merge patch that sets the requested replicas in `raw` (the AppEnvironment as the
/// server has it), or every reason it cannot. It carries the object's resourceVersion: the
/// server refuses it if the spec changed meanwhile (the workers list is sent whole).
pub fn patch(raw: &Value, requests: &[Request]) -> Result<Value, Vec<String>> {
    let env: AppEnvironment = serde_json::from_value(raw.clone())
        .map_err(|e| vec![format!("the AppEnvironment cannot be read: {e}")])?;
    let name = env.metadata.name.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let mut workers = raw["spec"]["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut spec = serde_json::Map::new();
    let mut seen = std::collections::BTreeSet::new();
    for Request {
        component,
        replicas,
    } in requests
    {
        if !seen.insert(component.as_str()) {
            problems.push(format!("{component}: named twice"));
            continue;
        }
        if component == Component::Web.as_str() {
            let embedded = env
                .spec
                .database
                .as_ref()
                .is_some_and(|d| d.embedded.is_some());
            if embedded && *replicas > 1 {
                problems.push(format!(
                    "web: at most 1 replica with spec.database.embedded (one writer), not {replicas}"
                ));
            }
            spec.insert("web".to_owned(), json!({"replicas": replicas}));
            continue;
        }
        let Some(i) = env.spec.workers.iter().position(|w| w.name == *component) else {
            let mut known = vec![Component::Web.as_str().to_owned()];
            known.extend(env.spec.workers.iter().map(|w| w.name.clone()));
            problems.push(format!(
                "{component}: environment {name:?} has no such component (it has {})",
                known.join(", ")
            ));
            continue;
        };
        let worker = &env.spec.workers[i];
        if let Some(a) = &worker.autoscaling {
            problems.push(format!(
                "{component}: autoscaled between {} and {} replicas (spec.workers[{i}].autoscaling): change minReplicas and maxReplicas instead",
                a.min_replicas, a.max_replicas
            ));
            continue;
        }
        if worker.singleton && *replicas > 1 {
            problems.push(format!(
                "{component}: a singleton worker runs at most 1 replica (spec.workers[{i}].singleton), not {replicas}"
            ));
            continue;
        }
        if let Some(w) = workers.get_mut(i).and_then(Value::as_object_mut) {
            w.insert("replicas".to_owned(), json!(replicas));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if requests
        .iter()
        .any(|r| r.component != Component::Web.as_str())
    {
        spec.insert("workers".to_owned(), Value::Array(workers));
    }
    Ok(json!({
        "metadata": {"resourceVersion": raw["metadata"]["resourceVersion"]},
        "spec": spec,
    }))
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<bool> {
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    for text in &args.replicas {
        match parse(text) {
            Ok(request) => requests.push(request),
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    // Read and written as JSON: fields this binary does not know survive the patch.
    let resource = ApiResource::erase::<AppEnvironment>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let name = &args.environment;
    let current = api
        .get(name)
        .await
        .with_context(|| format!("reading AppEnvironment {name}"))?;
    let raw = serde_json::to_value(&current).context("encoding the AppEnvironment")?;
    let body = patch(&raw, &requests).map_err(|p| anyhow::anyhow!("{}", p.join("\n")))?;
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .with_context(|| {
            format!("updating AppEnvironment {name} (retry if it changed meanwhile)")
        })?;
    for Request {
        component,
        replicas,
    } in &requests
    {
        println!("{name}: {component} set to {replicas} replicas");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(workers: &str) -> Value {
        let yaml = format!(
            "{{apiVersion: appenv.dev/v1alpha1, kind: AppEnvironment, \
              metadata: {{name: shop, resourceVersion: '42'}}, \
              spec: {{app: shop, image: 'shop:1', redis: {{}}, workers: {workers}}}}}"
        );
        serde_norway::from_str(&yaml).expect("yaml")
    }

    #[test]
    fn the_parser_takes_only_component_equals_a_small_number() {
        assert_eq!(
            parse("celery=3"),
            Ok(Request {
                component: "celery".into(),
                replicas: 3
            })
        );
        assert_eq!(parse("web=0").map(|r| r.replicas), Ok(0));
        for (text, says) in [
            ("celery", "expected COMPONENT=N"),
            ("=3", "the component is missing"),
            ("celery=", "celery: \"\" is not a number"),
            ("celery=-1", "celery: \"-1\" is not a number"),
            ("celery=+1", "celery: \"+1\" is not a number"),
            ("celery=3x", "celery: \"3x\" is not a number"),
            ("celery= 3", "celery: \" 3\" is not a number"),
            ("celery=101", "celery: 101 replicas: at most 100"),
            ("celery=99999999999", "is not a number"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_worker_and_web_are_set_and_the_patch_is_guarded_by_the_version() {
        let raw =
            raw("[{name: celery, replicas: 1, command: [celery]}, {name: beat, singleton: true}]");
        let body = patch(
            &raw,
            &[
                parse("celery=4").expect("parse"),
                parse("web=2").expect("parse"),
            ],
        )
        .expect("patch");
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert_eq!(body["spec"]["web"], json!({"replicas": 2}));
        assert_eq!(
            body["spec"]["workers"],
            json!([
                {"name": "celery", "replicas": 4, "command": ["celery"]},
                {"name": "beat", "singleton": true},
            ])
        );
        let web_only = patch(&raw, &[parse("web=3").expect("parse")]).expect("patch");
        assert!(web_only["spec"].get("workers").is_none(), "{web_only}");
    }

    #[test]
    fn autoscaled_singleton_unknown_and_repeated_components_are_refused_by_name() {
        let raw = raw(
            "[{name: celery, autoscaling: {minReplicas: 1, maxReplicas: 5, queue: {type: Celery, names: [celery]}}}, \
              {name: beat, singleton: true}]",
        );
        let requests: Vec<Request> = ["celery=3", "beat=2", "mailer=1", "web=1", "web=2"]
            .iter()
            .map(|t| parse(t).expect("parse"))
            .collect();
        let problems = patch(&raw, &requests).expect_err("refused");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("celery: autoscaled between 1 and 5 replicas (spec.workers[0].autoscaling): change minReplicas and maxReplicas"), "{}", problems[0]);
        assert!(
            problems[1].starts_with("beat: a singleton worker runs at most 1 replica"),
            "{}",
            problems[1]
        );
        assert_eq!(
            problems[2],
            "mailer: environment \"shop\" has no such component (it has web, celery, beat)"
        );
        assert_eq!(problems[3], "web: named twice");
    }
}
