//! The models a provider listed itself (model discovery): the cell a
//! route reads them from on each request, lock-free. `discovery` fills it
//! in the background.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// The models a provider listed, in its order and as a set.
#[derive(Debug, Default)]
pub struct ModelSet {
    pub list: Vec<String>,
    set: HashSet<String>,
}

impl ModelSet {
    fn new(models: Vec<String>) -> Self {
        let mut set = HashSet::with_capacity(models.len());
        let list = models
            .into_iter()
            .filter(|m| !m.is_empty() && set.insert(m.clone()))
            .collect();
        ModelSet { list, set }
    }

    pub fn contains(&self, model: &str) -> bool {
        self.set.contains(model)
    }
}

/// A provider's last good discovered list; empty until a fetch succeeded.
#[derive(Debug, Default)]
pub struct DiscoveredModels {
    models: ArcSwapOption<ModelSet>,
}

impl DiscoveredModels {
    /// The last good list, if any fetch succeeded yet.
    pub fn models(&self) -> Option<Arc<ModelSet>> {
        self.models.load_full()
    }

    /// Whether the provider listed `model` at its last good fetch.
    pub fn contains(&self, model: &str) -> bool {
        (*self.models.load())
            .as_ref()
            .is_some_and(|s| s.contains(model))
    }

    /// How many models the last good list has.
    pub fn len(&self) -> usize {
        (*self.models.load()).as_ref().map_or(0, |s| s.list.len())
    }

    /// Makes `models` (deduplicated, empty names dropped) the current
    /// list; returns how many it holds.
    pub fn store(&self, models: Vec<String>) -> usize {
        let set = ModelSet::new(models);
        let n = set.list.len();
        self.models.store(Some(Arc::new(set)));
        n
    }
}
