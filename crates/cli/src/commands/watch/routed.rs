//! Per-image refresh modes from the config file: one refresher per mode in use, each image's
//! event sent to its own, the rest to the default (`--refresh`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use registry_core::ImageReference;
use watcher::{RefreshError, RefreshEvent, RefreshOutcome, Refresher};

#[derive(Debug)]
pub struct RoutedRefresher {
    pub default: Arc<dyn Refresher>,
    pub routes: HashMap<ImageReference, Arc<dyn Refresher>>,
}

#[async_trait]
impl Refresher for RoutedRefresher {
    fn name(&self) -> &'static str {
        self.default.name()
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        match self.routes.get(&event.image) {
            Some(refresher) => refresher.refresh(event).await,
            None => self.default.refresh(event).await,
        }
    }
}
