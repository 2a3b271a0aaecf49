//! What the audit sinks (JSON Lines files, syslog, webhooks — delivered by `warden-targets`) need
//! from the registry: the audit log after a point, and a durable cursor per sink, moved only by
//! the jobs-lease holder (a fenced write), so each event is delivered by one node at a time, in
//! order, at least once.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use warden_types::{AuditEvent, SinkStatus};

use super::Registry;
use crate::error::CoreError;
use crate::ports::AuditFilter;

impl Registry {
    /// The last sequence number delivered to `sink` (0: nothing yet).
    pub fn sink_cursor(&self, sink: &str) -> Result<u64, CoreError> {
        Ok(self.reader()?.sink_cursor(sink)?.unwrap_or(0))
    }

    /// Committed audit events after `after`, in chain order, at most `limit` (for the sinks; no
    /// caller to authorise — the sinks are the server's own).
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, CoreError> {
        Ok(self
            .reader()?
            .list_audit(&AuditFilter::default(), after, limit)?)
    }

    /// Moves `sink`'s cursor to `seq` (delivered). Refused unless this node still holds the jobs
    /// lease: a node that lost it must not move the cursor of the one that now delivers.
    pub async fn advance_sink(&self, sink: &str, seq: u64) -> Result<(), CoreError> {
        // Strict, unlike other leader writes (which one-off callers may run unfenced): without
        // a fence there is no proof this node delivers.
        let Some(fence) = self.fence.lock().ok().and_then(|f| f.clone()) else {
            return Err(CoreError::InvalidState(
                "this node does not hold the jobs lease".into(),
            ));
        };
        let sink = sink.to_owned();
        self.write(move |tx, job| {
            super::cluster::check_fence(tx, &fence, job.now())?;
            tx.put_sink_cursor(&sink, seq, job.now())?;
            Ok(())
        })
        .await
    }

    /// Records a sink's delivery state (kept in memory; served by `GET /v1/audit/sinks`).
    pub fn report_sink(&self, status: SinkStatus) {
        if let Ok(mut m) = self.sink_status.lock() {
            m.insert(status.name.clone(), status);
        }
    }

    /// Every configured sink's state, with its durable cursor and lag (admins and auditors).
    pub fn sink_statuses(&self, actor: &crate::actor::Actor) -> Result<Vec<SinkStatus>, CoreError> {
        if !actor.can_read_audit() {
            return Err(CoreError::Forbidden(
                "reading the audit sinks needs the admin or auditor role".into(),
            ));
        }
        let known: BTreeMap<String, SinkStatus> = self
            .sink_status
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let store = self.reader()?;
        // The checkpoint follows the chain's head at every commit.
        let head = store.audit_checkpoint()?.map_or(0, |c| c.head.seq);
        let mut out = Vec::new();
        for (_, mut s) in known {
            s.cursor = store.sink_cursor(&s.name)?.unwrap_or(0);
            s.lag = head.saturating_sub(s.cursor);
            s.active = self.is_leader();
            out.push(s);
        }
        Ok(out)
    }
}

/// When a sink last delivered, for its status.
pub fn delivered_now(status: &mut SinkStatus, at: OffsetDateTime) {
    status.last_delivery_at = Some(at);
    status.failures = 0;
    status.last_error = None;
}
