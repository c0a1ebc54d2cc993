//! `appenv crd`: print the CustomResourceDefinition (as kept in `crds/`).

pub fn run() -> anyhow::Result<bool> {
    print!("{}", appenv_api::crd::crd_yaml()?);
    Ok(true)
}
