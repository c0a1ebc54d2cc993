//! Typed names: every label key, component, condition type, condition reason, event action
//! and child kind appenv writes or reads, each written once here with its `as_str()`. Code
//! elsewhere names the variant, never the string, so a typo is a compile error and a rename
//! is one line.

/// An enum whose variants each stand for one fixed string.
macro_rules! names {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The string the API and users see.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }

            /// The variant whose string is `text`.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
    };
}

pub(crate) use names;

/// Label keys.
pub mod label {
    /// Set on every child: the AppEnvironment it belongs to (the controller watches by it).
    pub const ENVIRONMENT: &str = "appenv.dev/environment";
    /// Set on volumes (and their namespace) kept after their environment was deleted, so that
    /// a new AppEnvironment of the same name adopts them.
    pub const RETAINED: &str = "appenv.dev/retain";
    /// `app.kubernetes.io/component`: web, worker-NAME, redis, postgres, migrations.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `app.kubernetes.io/name`: the app (`spec.app`).
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/instance`: the environment.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `app.kubernetes.io/managed-by`: appenv.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}

/// Annotations of an AppEnvironment that ask the operator for something once (a new value is a
/// new request; the status records the last one handled).
pub mod request {
    /// A backup now (`appenv backup now`); the value is the request's time.
    pub const BACKUP: &str = "appenv.dev/backup-requested";
    /// An in-place restore (`appenv restore`): `<time> <backup id or latest> [into-non-empty]`.
    pub const RESTORE: &str = "appenv.dev/restore-requested";
    /// Sleep now (`appenv preview sleep`); the value is the request's time (RFC 3339).
    pub const SLEEP: &str = "appenv.dev/sleep-requested";
    /// The time (RFC 3339, UTC, whole seconds) of the last HTTP request to the environment's
    /// host, written by the activator at most once a minute, and at once to wake a sleeping
    /// environment (`appenv preview wake` writes it too). A value newer than
    /// `status.sleep.since` wakes the environment.
    pub const LAST_REQUEST: &str = "appenv.dev/last-request";
}

names! {
    /// A component of an environment without a name of its own (workers are `worker-NAME`,
    /// see [`worker_component`]).
    pub enum Component {
        Web => "web",
        Redis => "redis",
        Postgres => "postgres",
        Migrations => "migrations",
        Backup => "backup",
        Restore => "restore",
        Seed => "seed",
    }
}

/// The component name of a worker: `worker-NAME`.
pub fn worker_component(name: &str) -> String {
    format!("worker-{name}")
}

names! {
    /// Condition types of an AppEnvironment's status.
    pub enum ConditionType {
        Ready => "Ready",
        Valid => "Valid",
        Progressing => "Progressing",
        Degraded => "Degraded",
        DatabaseReady => "DatabaseReady",
        MigrationsSucceeded => "MigrationsSucceeded",
        BackupsHealthy => "BackupsHealthy",
    }
}

names! {
    /// Reasons of conditions and events (CamelCase, as Kubernetes writes them).
    pub enum Reason {
        Valid => "Valid",
        InvalidSpec => "InvalidSpec",
        NotConfigured => "NotConfigured",
        External => "External",
        Embedded => "Embedded",
        VolumePending => "VolumePending",
        Ready => "Ready",
        NotReady => "NotReady",
        Starting => "Starting",
        Succeeded => "Succeeded",
        WaitingForDatabase => "WaitingForDatabase",
        Running => "Running",
        Failed => "Failed",
        Done => "Done",
        Stalled => "Stalled",
        RollingOut => "RollingOut",
        ComponentFailing => "ComponentFailing",
        Healthy => "Healthy",
        Degraded => "Degraded",
        MigrationFailed => "MigrationFailed",
        Expired => "Expired",
        Suspended => "Suspended",
        Sleeping => "Sleeping",
        Woke => "Woke",
        ReplicasReverted => "ReplicasReverted",
        BackingUp => "BackingUp",
        BackupFailed => "BackupFailed",
        BackupStale => "BackupStale",
        NoBackupYet => "NoBackupYet",
        BackupSucceeded => "BackupSucceeded",
        Restoring => "Restoring",
        RestoreFailed => "RestoreFailed",
        RestoreSucceeded => "RestoreSucceeded",
    }
}

names! {
    /// What an event says appenv was doing (the event's `action`).
    pub enum Action {
        Validate => "Validate",
        Reconcile => "Reconcile",
        Migrate => "Migrate",
        Backup => "Backup",
        Restore => "Restore",
        Sleep => "Sleep",
        Delete => "Delete",
    }
}

names! {
    /// Kinds of the objects appenv makes, watches or reads.
    pub enum ChildKind {
        Namespace => "Namespace",
        ConfigMap => "ConfigMap",
        Secret => "Secret",
        Service => "Service",
        Deployment => "Deployment",
        StatefulSet => "StatefulSet",
        Job => "Job",
        Ingress => "Ingress",
        PersistentVolumeClaim => "PersistentVolumeClaim",
        ResourceQuota => "ResourceQuota",
        LimitRange => "LimitRange",
        NetworkPolicy => "NetworkPolicy",
        Pod => "Pod",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_variant() {
        for c in ConditionType::ALL {
            assert_eq!(ConditionType::parse(c.as_str()), Some(*c));
        }
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
            assert_eq!(r.to_string(), r.as_str());
        }
        for p in crate::Phase::ALL {
            assert_eq!(crate::Phase::parse(p.as_str()), Some(*p));
            assert_eq!(serde_json::to_value(p).ok(), Some(p.as_str().into()));
        }
        for k in ChildKind::ALL {
            assert_eq!(ChildKind::parse(k.as_ref()), Some(*k));
        }
        assert_eq!(Component::parse("worker-x"), None);
        assert_eq!(worker_component("x"), "worker-x");
    }

    #[test]
    fn names_are_unique_within_their_enum() {
        let mut reasons: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), Reason::ALL.len());
    }
}
