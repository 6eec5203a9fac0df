//! Which ingest prefix BuildButler answers (its Action posts to `/api/v1/ingest`, its docs
//! say `/ingest`). The configured prefix is used until its builds route answers 404; then,
//! unless builds were already delivered on it, the other known prefix is probed and, if it
//! answers, used for this run with a warning naming the line to set. What was found is
//! remembered in the state database for this URL and configured prefix, so that a cron
//! `--once` does not probe again on every run; a changed config probes afresh. A database
//! that delivered before routes were remembered (0.1 records `last_delivery_ok_at` only)
//! delivered on its configured prefix: that is what is remembered for it.

use serde::{Deserialize, Serialize};

use crate::butler::client::{Probe, INGEST_PREFIXES};
use crate::butler::Sink;
use crate::config::{Config, Mode};
use crate::store::state::{self, Key};
use crate::store::{Store, StoreError};

/// The prefix that worked, for one configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Found {
    url: String,
    configured: String,
    /// The prefix BuildButler accepted builds at (or, found by a probe, answers at).
    answers: String,
}

impl Found {
    /// A record for `config`, with `answers`.
    fn of(config: &Config, answers: &str) -> Found {
        let bb = &config.buildbutler;
        Found {
            url: bb.url.to_string(),
            configured: bb.ingest_prefix.trim_end_matches('/').to_string(),
            answers: answers.to_string(),
        }
    }

    fn same_config(&self, config: &Config) -> bool {
        let now = Found::of(config, &self.answers);
        now.url == self.url && now.configured == self.configured
    }
}

async fn load(store: &Store, config: &Config) -> Result<Option<Found>, StoreError> {
    let configured = Found::of(config, "").configured;
    let upgraded = serde_json::to_string(&Found::of(config, &configured)).ok();
    let stored = store
        .call(move |c| {
            let stored = state::get(c, Key::IngestRoute)?;
            match (stored, upgraded) {
                (None, Some(json)) if state::get(c, Key::LastDeliveryOkAt)?.is_some() => {
                    state::set_if_unset(c, Key::IngestRoute, &json)?;
                    state::get(c, Key::IngestRoute)
                }
                (stored, _) => Ok(stored),
            }
        })
        .await?;
    let Some(json) = stored else {
        return Ok(None);
    };
    match serde_json::from_str::<Found>(&json) {
        Ok(found) => Ok(Some(found).filter(|f| f.same_config(config))),
        // Only kitesync writes it: forgetting it costs a probe when the configured prefix
        // answers 404, and the route that works is remembered again.
        Err(e) => {
            tracing::warn!(
                "the ingest route remembered in the state database is unreadable ({e}): ignored; \
                 the route BuildButler answers at is found and remembered again"
            );
            Ok(None)
        }
    }
}

async fn save(store: &Store, found: &Found) -> Result<(), StoreError> {
    // Strings only: encoding cannot fail, and if it did the route would merely be probed again.
    let Ok(json) = serde_json::to_string(found) else {
        return Ok(());
    };
    store
        .call(move |c| state::set(c, Key::IngestRoute, &json))
        .await
}

fn advise(configured: &str, answers: &str) {
    tracing::warn!(
        "BuildButler has no ingest route at {configured} but answers at {answers}; using it: \
         set ingest_prefix = \"{answers}\" in [buildbutler]"
    );
}

/// Uses the prefix found earlier for this configuration, if any (and says so when it is not
/// the configured one).
pub(crate) async fn recall(store: &Store, sink: &Sink, config: &Config) -> Result<(), StoreError> {
    if config.buildbutler.mode != Mode::Ingest {
        return Ok(());
    }
    if let Some(found) = load(store, config).await? {
        if found.answers != sink.prefix() {
            sink.use_prefix(&found.answers);
            advise(&found.configured, &found.answers);
        }
    }
    Ok(())
}

/// After the builds route answered 404: true when the other known prefix answers and is now
/// in use. Never once builds were delivered on the prefix in use.
pub(crate) async fn recover(
    store: &Store,
    sink: &Sink,
    config: &Config,
) -> Result<bool, StoreError> {
    if config.buildbutler.mode != Mode::Ingest {
        return Ok(false);
    }
    let current = sink.prefix();
    if load(store, config)
        .await?
        .is_some_and(|f| f.answers == current)
    {
        return Ok(false);
    }
    let Some(other) = INGEST_PREFIXES.into_iter().find(|p| *p != current) else {
        return Ok(false);
    };
    if sink.probe(other).await != Probe::Answers {
        return Ok(false);
    }
    sink.use_prefix(other);
    advise(&current, other);
    save(store, &Found::of(config, other)).await?;
    Ok(true)
}

/// After builds were accepted: remembers that the prefix in use works.
pub(crate) async fn confirm(store: &Store, sink: &Sink, config: &Config) -> Result<(), StoreError> {
    if config.buildbutler.mode != Mode::Ingest {
        return Ok(());
    }
    let found = Found::of(config, &sink.prefix());
    if load(store, config).await?.as_ref() != Some(&found) {
        save(store, &found).await?;
    }
    Ok(())
}
