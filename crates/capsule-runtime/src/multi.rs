//! Several backends behind one [`Runtime`]: a server runs sandboxes with
//! the native backend by default and, on request (`runtime: "gvisor"` at
//! create), with another. Each sandbox stays with the backend that made
//! it; after a restart the backend is found again from what each one
//! still holds on the host.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use capsule_api::SandboxId;

use crate::{
    Attached, NetworkSpec, Result, Runtime, RuntimeError, SandboxSpec, TemplateSpec, Usage,
};

/// The backends of one server, by name.
pub struct Runtimes {
    default: Arc<dyn Runtime>,
    others: BTreeMap<&'static str, Arc<dyn Runtime>>,
    /// Backends asked for but not available here, with the reason.
    unavailable: BTreeMap<String, String>,
    owners: Mutex<HashMap<SandboxId, &'static str>>,
}

impl Runtimes {
    pub fn new(default: Arc<dyn Runtime>) -> Self {
        Self {
            default,
            others: BTreeMap::new(),
            unavailable: BTreeMap::new(),
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a backend sandboxes can ask for by its name.
    pub fn add(&mut self, backend: Arc<dyn Runtime>) {
        self.others.insert(backend.name(), backend);
    }

    /// Records a backend that was asked for but cannot run here, so that a
    /// create asking for it says why.
    pub fn add_unavailable(&mut self, name: impl Into<String>, why: impl Into<String>) {
        self.unavailable.insert(name.into(), why.into());
    }

    /// The names of the backends sandboxes can use, the default first.
    pub fn names(&self) -> Vec<&'static str> {
        std::iter::once(self.default.name())
            .chain(self.others.keys().copied())
            .collect()
    }

    fn by_name(&self, name: &str) -> Option<&Arc<dyn Runtime>> {
        if name == self.default.name() {
            Some(&self.default)
        } else {
            self.others.get(name)
        }
    }

    /// The backend a sandbox lives in.
    fn owner(&self, id: SandboxId) -> &Arc<dyn Runtime> {
        let known = self.owners.lock().expect("owners lock").get(&id).copied();
        if let Some(backend) = known.and_then(|n| self.by_name(n)) {
            return backend;
        }
        // Not made by this process (a restart): whoever still holds it,
        // remembered so that the search runs once per sandbox.
        let backend = self
            .others
            .values()
            .find(|b| b.leftovers().contains(&id))
            .unwrap_or(&self.default);
        if !self.others.is_empty() {
            self.owners
                .lock()
                .expect("owners lock")
                .insert(id, backend.name());
        }
        backend
    }

    fn all(&self) -> impl Iterator<Item = &Arc<dyn Runtime>> {
        std::iter::once(&self.default).chain(self.others.values())
    }
}

#[async_trait]
impl Runtime for Runtimes {
    fn name(&self) -> &'static str {
        self.default.name()
    }

    fn select(&self, requested: Option<&str>) -> std::result::Result<&'static str, String> {
        let Some(name) = requested else {
            return Ok(self.default.name());
        };
        let name = if name == "runsc" { "gvisor" } else { name };
        if let Some(backend) = self.by_name(name) {
            return Ok(backend.name());
        }
        let available = self.names().join(", ");
        let exists = name == "native"
            || crate::oci::OciFlavor::ALL
                .iter()
                .any(|f| f.runtime_name() == name);
        Err(match self.unavailable.get(name) {
            Some(why) => format!("runtime {name:?} is not available on this server: {why}"),
            None if exists => format!(
                "runtime {name:?} is not enabled on this server (enabled: {available}; start \
                 the server with `--runtimes native,{name}` to add it)"
            ),
            None => {
                let known: Vec<&str> = std::iter::once("native")
                    .chain(crate::oci::OciFlavor::ALL.iter().map(|f| f.runtime_name()))
                    .collect();
                format!(
                    "there is no runtime {name:?}: Capsule's runtimes are {} (enabled on this \
                     server: {available})",
                    known.join(", ")
                )
            }
        })
    }

    fn warnings(&self) -> Vec<String> {
        self.all().flat_map(|b| b.warnings()).collect()
    }

    fn check_template(&self, template: &TemplateSpec) -> std::result::Result<(), String> {
        self.default.check_template(template)
    }

    fn check_network(&self, network: &NetworkSpec) -> Result<()> {
        self.default.check_network(network)
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Attached> {
        let name = self
            .select(spec.runtime.as_deref())
            .map_err(RuntimeError::Unavailable)?;
        let backend = self.by_name(name).expect("selected backends exist");
        if name != self.default.name() {
            if spec.snapshot.is_some() || !spec.volumes.is_empty() {
                return Err(RuntimeError::Refused(format!(
                    "snapshots and volumes belong to the {} runtime; a sandbox of the {name} \
                     runtime cannot start from a snapshot or mount volumes",
                    self.default.name()
                )));
            }
            backend.check_template(&spec.template).map_err(|why| {
                RuntimeError::Unavailable(format!(
                    "template {} cannot run with the {name} runtime here: {why}",
                    spec.template.name
                ))
            })?;
        }
        self.owners
            .lock()
            .expect("owners lock")
            .insert(spec.id, backend.name());
        let made = backend.create(spec).await;
        if made.is_err() {
            self.owners.lock().expect("owners lock").remove(&spec.id);
        }
        made
    }

    async fn attach(&self, id: SandboxId) -> Result<Option<Attached>> {
        self.owner(id).attach(id).await
    }

    async fn destroy(&self, id: SandboxId) -> Result<()> {
        let result = self.owner(id).clone().destroy(id).await;
        if result.is_ok() {
            self.owners.lock().expect("owners lock").remove(&id);
        }
        result
    }

    fn leftovers(&self) -> Vec<SandboxId> {
        let mut ids: Vec<SandboxId> = self.all().flat_map(|b| b.leftovers()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    async fn usage(&self, id: SandboxId) -> Result<Usage> {
        self.owner(id).usage(id).await
    }

    fn disk_capacity(&self) -> Option<u64> {
        self.default.disk_capacity()
    }

    async fn shutdown(&self) {
        for backend in self.all() {
            backend.shutdown().await;
        }
    }

    async fn set_foreground(&self, id: SandboxId) -> Result<()> {
        self.owner(id).set_foreground(id).await
    }

    async fn pause(&self, id: SandboxId) -> Result<()> {
        self.owner(id).pause(id).await
    }

    async fn resume(&self, id: SandboxId) -> Result<()> {
        self.owner(id).resume(id).await
    }

    fn storage(&self) -> &'static str {
        self.default.storage()
    }

    async fn snapshot(&self, id: SandboxId, snapshot: &str) -> Result<u64> {
        self.owner(id).snapshot(id, snapshot).await
    }

    async fn delete_snapshot(&self, snapshot: &str) -> Result<()> {
        // Snapshots and volumes are the default backend's.
        self.default.delete_snapshot(snapshot).await
    }

    async fn create_volume(&self, key: &str, bytes: u64) -> Result<()> {
        self.default.create_volume(key, bytes).await
    }

    async fn delete_volume(&self, key: &str) -> Result<()> {
        self.default.delete_volume(key).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::VolumeSpec;

    /// A backend that records the creates it gets and answers `usage`
    /// with its own marker, so tests see where each call went.
    struct Fake {
        name: &'static str,
        marker: u64,
        held: Vec<SandboxId>,
        created: Mutex<Vec<SandboxId>>,
    }

    fn fake(name: &'static str, marker: u64, held: Vec<SandboxId>) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            marker,
            held,
            created: Mutex::new(Vec::new()),
        })
    }

    #[async_trait]
    impl Runtime for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn check_template(&self, _t: &TemplateSpec) -> std::result::Result<(), String> {
            Ok(())
        }
        async fn create(&self, spec: &SandboxSpec) -> Result<Attached> {
            self.created.lock().unwrap().push(spec.id);
            Err(RuntimeError::StartFailed {
                id: spec.id,
                reason: format!("made by {}", self.name),
            })
        }
        async fn attach(&self, _id: SandboxId) -> Result<Option<Attached>> {
            Ok(None)
        }
        async fn destroy(&self, _id: SandboxId) -> Result<()> {
            Ok(())
        }
        fn leftovers(&self) -> Vec<SandboxId> {
            self.held.clone()
        }
        async fn usage(&self, _id: SandboxId) -> Result<Usage> {
            Ok(Usage {
                pids: Some(self.marker),
                ..Usage::default()
            })
        }
    }

    fn template() -> TemplateSpec {
        TemplateSpec {
            name: "base".into(),
            description: String::new(),
            env: Default::default(),
            requires: Vec::new(),
            extra_binds: Vec::new(),
        }
    }

    #[test]
    fn select_names_the_backend_or_says_why_not() {
        let mut rts = Runtimes::new(fake("native", 1, vec![]));
        rts.add(fake("gvisor", 2, vec![]));
        rts.add_unavailable("crun", "crun is not installed");
        assert_eq!(rts.select(None), Ok("native"));
        assert_eq!(rts.select(Some("native")), Ok("native"));
        assert_eq!(rts.select(Some("runsc")), Ok("gvisor"));
        let err = rts.select(Some("crun")).unwrap_err();
        assert!(err.contains("not installed"), "{err}");
        let err = rts.select(Some("runc")).unwrap_err();
        assert!(
            err.contains("\"runc\"") && err.contains("--runtimes native,runc"),
            "{err}"
        );
        // A name no build of Capsule has is not suggested for `--runtimes`.
        let err = rts.select(Some("bogus")).unwrap_err();
        assert!(
            err.contains("no runtime \"bogus\"") && !err.contains("--runtimes"),
            "{err}"
        );
        assert!(err.contains("gvisor, runc, crun"), "{err}");
        assert_eq!(rts.names(), vec!["native", "gvisor"]);
    }

    #[tokio::test]
    async fn creates_go_to_the_backend_asked_for_and_calls_follow_the_sandbox() {
        let survivor = SandboxId::random();
        let native = fake("native", 1, vec![]);
        let gvisor = fake("gvisor", 2, vec![survivor]);
        let mut rts = Runtimes::new(native.clone());
        rts.add(gvisor.clone());

        let mut spec = SandboxSpec::new(SandboxId::random(), template());
        spec.runtime = Some("gvisor".into());
        let err = rts.create(&spec).await.err().expect("the fake refuses");
        assert!(err.to_string().contains("made by gvisor"), "{err}");
        assert_eq!(*gvisor.created.lock().unwrap(), vec![spec.id]);
        assert!(native.created.lock().unwrap().is_empty());

        // Snapshots and volumes are the default backend's only.
        spec.volumes = vec![VolumeSpec {
            key: "v".into(),
            path: "/data".into(),
            read_only: false,
        }];
        let err = rts.create(&spec).await.err().expect("refused");
        assert!(err.to_string().contains("volumes"), "{err}");
        assert_eq!(
            gvisor.created.lock().unwrap().len(),
            1,
            "never reached gvisor"
        );

        // After a restart, a sandbox is found with whoever still holds it.
        assert_eq!(rts.usage(survivor).await.unwrap().pids, Some(2));
        assert_eq!(rts.usage(SandboxId::random()).await.unwrap().pids, Some(1));
        assert_eq!(rts.leftovers(), vec![survivor]);
    }
}
