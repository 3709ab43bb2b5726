//! PostgreSQL's cancel requests: a client opens a second connection with the process id and
//! secret key its session was given, and the query that session runs stops. Each session notes
//! the id of the query it runs; a cancel request with the right key cancels it in the engine,
//! whether it is still planning or already streaming rows (pgwire's own cancel handling only
//! covers the first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;

use crate::serving::Engine;

/// The sessions that may be cancelled, by process id.
#[derive(Default)]
pub struct Sessions {
    by_pid: Mutex<HashMap<i32, (SecretKey, Arc<Running>)>>,
}

/// The query a session runs now (its id in the engine), if any.
#[derive(Default)]
pub struct Running(Mutex<Option<String>>);

impl Running {
    /// Notes the query the session runs now.
    pub fn set(&self, query_id: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(query_id.to_string());
    }

    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A session's entry: removed when the connection (which holds it) ends.
pub struct Registered {
    sessions: Arc<Sessions>,
    pid: i32,
    /// The query the session runs.
    pub running: Arc<Running>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.pid);
    }
}

impl Sessions {
    /// Registers a session under its process id and key.
    pub fn register(self: &Arc<Self>, pid: i32, key: SecretKey) -> Registered {
        let running = Arc::new(Running::default());
        self.lock().insert(pid, (key, running.clone()));
        Registered {
            sessions: self.clone(),
            pid,
            running,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (SecretKey, Arc<Running>)>> {
        self.by_pid.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Cancels the query of the session a request names, when its key is right.
pub struct Cancel {
    /// The sessions.
    pub sessions: Arc<Sessions>,
    /// The engine the queries run in.
    pub engine: Arc<Engine>,
}

#[async_trait]
impl CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let running = self
            .sessions
            .lock()
            .get(&request.pid)
            .filter(|(key, _)| key.eq_value(&request.secret_key))
            .and_then(|(_, running)| running.get());
        if let Some(query_id) = running {
            self.engine.governor().cancel(&query_id);
        }
    }
}
