//! Durable webhook events. (Temporary stub with the agreed signatures; the webhook branch
//! replaces this file.)
#![allow(dead_code, unused_variables)]

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StateError;

pub struct NewEvent {
    pub job: String,
    pub idempotency_key: Option<String>,
    pub records: String,
    pub record_count: u32,
    pub urgent: bool,
}
pub struct Stored {
    pub id: String,
    pub duplicate: bool,
}
#[derive(Serialize)]
pub struct EventView {
    pub id: String,
    pub job: String,
    pub status: EventStatus,
    pub received_at: String,
    pub finished_at: Option<String>,
    pub record_count: u32,
    pub sessions: Vec<String>,
    pub outcome: Option<serde_json::Value>,
}
#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Queued,
    Processing,
    Done,
    Failed,
    Held,
}
pub struct QueuedEvent {
    pub id: String,
    pub seq: i64,
    pub job: String,
    pub records: String,
    pub urgent: bool,
    pub status: EventStatus,
    pub sessions: Vec<String>,
}
#[derive(Clone)]
pub struct EventStore;
impl EventStore {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        todo!()
    }
    pub async fn append(&self, e: NewEvent) -> Result<Stored, StateError> {
        todo!()
    }
    pub fn get(&self, id: &str) -> Result<Option<EventView>, StateError> {
        todo!()
    }
    pub fn pending(
        &self,
        jobs: &[String],
        max_records: usize,
    ) -> Result<Vec<QueuedEvent>, StateError> {
        todo!()
    }
    pub fn has_pending(&self, jobs: &[String]) -> Result<(usize, bool), StateError> {
        todo!()
    }
    pub fn mark_processing(
        &self,
        ids: &[String],
        session_id: Option<&str>,
    ) -> Result<(), StateError> {
        todo!()
    }
    pub fn finish(
        &self,
        outcomes: &[(String, EventStatus, serde_json::Value)],
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        todo!()
    }
    pub fn queued_total(&self) -> Result<u64, StateError> {
        todo!()
    }
}
