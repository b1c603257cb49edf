//! The SQLite database: rooms made through the control API, and the chat archive when the
//! operator turns it on. Live meeting state stays in memory; media is never stored.
//!
//! One thread owns the connection; the conductor and the API send it jobs in order, so the
//! file sees changes in the order the control plane made them, and a slow disk never holds
//! up a meeting. Schema changes are numbered migrations, applied at start in a transaction.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Migrations, applied in order; `user_version` says how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: rooms and the chat archive.
    "CREATE TABLE rooms (
        name TEXT PRIMARY KEY NOT NULL,
        starts_at INTEGER,
        ends_at INTEGER,
        passcode TEXT,
        lobby INTEGER NOT NULL,
        capacity INTEGER,
        e2ee_required INTEGER NOT NULL,
        allow_unmute INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE chat (
        id INTEGER PRIMARY KEY,
        room TEXT NOT NULL,
        meeting TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_name TEXT NOT NULL,
        recipient TEXT,
        text TEXT NOT NULL
    );
    CREATE INDEX chat_by_meeting ON chat (room, meeting, at_ms);
    CREATE INDEX chat_by_age ON chat (at_ms);",
    // 2: deleted rooms, whose old tokens stay refused.
    "CREATE TABLE deleted_rooms (
        name TEXT PRIMARY KEY NOT NULL,
        deleted_at INTEGER NOT NULL
    );",
    // 3: end-to-end encrypted chat, archived as the ciphertext it came as.
    "ALTER TABLE chat ADD COLUMN e2ee INTEGER NOT NULL DEFAULT 0;",
];

/// Jobs waiting for the database at most; beyond, changes are refused with an error and
/// archive rows are dropped (and counted), rather than memory growing behind a slow disk.
pub const QUEUE: usize = 4096;

/// How long a deleted room's name is remembered: longer than any token the API issues.
const TOMBSTONE_SECS: u64 = 366 * 86_400;

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub name: String,
    pub starts_at: Option<u64>,
    pub ends_at: Option<u64>,
    /// The passcode's salted hash (`ting_control::Passcode::to_stored`).
    pub passcode: Option<String>,
    pub lobby: bool,
    pub capacity: Option<usize>,
    pub e2ee_required: bool,
    pub allow_unmute: bool,
    pub created_at: u64,
}

/// One archived chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatRow {
    #[serde(skip)]
    pub room: String,
    #[serde(skip)]
    pub meeting: String,
    pub at_ms: u64,
    /// The sender's participant id.
    pub from: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// End-to-end encrypted: `text` is ciphertext only the meeting's participants could
    /// read (`docs/e2ee.md`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub e2ee: bool,
    pub text: String,
}

/// One meeting of a room with archived chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeetingRow {
    pub meeting: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub messages: u64,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Job {
    SaveRoom(RoomRow, Reply<()>),
    DeleteRoom(String, u64, Reply<()>),
    Archive(ChatRow),
    Meetings(String, Reply<Vec<MeetingRow>>),
    Export(String, String, Reply<Vec<ChatRow>>),
    #[cfg(test)]
    Prune(u64, Reply<usize>),
}

/// The handle to the store's thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::SyncSender<Job>,
}

/// What the database held at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rooms: Vec<RoomRow>,
    /// Deleted rooms and when (Unix seconds).
    pub deleted: Vec<(String, u64)>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("the database {path} (store.path) {reason}")]
pub struct StoreError {
    path: String,
    reason: String,
}

impl Store {
    /// Opens (or creates) the database, migrates it, and returns the rooms it holds. With
    /// `retention` the chat archive is pruned at start and every hour.
    pub fn open(path: &str, retention: Option<Duration>) -> Result<(Store, Loaded), StoreError> {
        let shown = if path.is_empty() { "(in memory)" } else { path };
        let fail = |reason: String| StoreError {
            path: shown.to_owned(),
            reason,
        };
        let conn = if path.is_empty() {
            Connection::open_in_memory()
        } else {
            Connection::open(Path::new(path))
        }
        .map_err(|e| fail(format!("cannot be opened: {e}")))?;
        migrate(&conn).map_err(|e| {
            fail(format!(
                "cannot be written (is the directory writable by ting?): {e}"
            ))
        })?;
        let rooms = load_rooms(&conn).map_err(|e| fail(format!("cannot be read: {e}")))?;
        let deleted = load_deleted(&conn).map_err(|e| fail(format!("cannot be read: {e}")))?;
        if let Some(r) = retention {
            match prune(&conn, now_ms().saturating_sub(r.as_millis() as u64)) {
                Ok(n) if n > 0 => info!(deleted = n, "chat older than its retention deleted"),
                Ok(_) => {}
                Err(e) => return Err(fail(format!("cannot be pruned: {e}"))),
            }
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("ting-store".into())
            .spawn(move || run(conn, rx, retention))
            .map_err(|e| fail(format!("has no thread: {e}")))?;
        Ok((Store { tx }, Loaded { rooms, deleted }))
    }

    /// Queues a job without waiting: a full queue is an error, never a wait.
    fn queue(&self, job: Job) -> Result<(), String> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                format!("the database is {QUEUE} writes behind (is the disk slow or full?)")
            }
            mpsc::TrySendError::Disconnected(_) => "the database thread stopped".to_owned(),
        })
    }

    async fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.queue(job(tx))?;
        rx.await
            .map_err(|_| "the database thread stopped".to_owned())?
    }

    /// A change to be written; the receiver says whether it reached the file.
    fn change(&self, job: impl FnOnce(Reply<()>) -> Job) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let (err_tx, err_rx) = oneshot::channel();
        match self.queue(job(tx)) {
            Ok(()) => rx,
            Err(e) => {
                let _ = err_tx.send(Err(e));
                err_rx
            }
        }
    }

    /// Saves a room; the receiver says whether it reached the file.
    pub fn save_room(&self, row: RoomRow) -> oneshot::Receiver<Result<(), String>> {
        self.change(|r| Job::SaveRoom(row, r))
    }

    /// Deletes a room and remembers its name and `deleted_at` (Unix seconds).
    pub fn delete_room(
        &self,
        name: String,
        deleted_at: u64,
    ) -> oneshot::Receiver<Result<(), String>> {
        self.change(|r| Job::DeleteRoom(name, deleted_at, r))
    }

    /// Archives a chat message without waiting; false when the queue is full (the message
    /// is not archived). Write failures are logged.
    pub fn archive(&self, row: ChatRow) -> bool {
        self.queue(Job::Archive(row)).is_ok()
    }

    pub async fn meetings(&self, room: String) -> Result<Vec<MeetingRow>, String> {
        self.ask(|r| Job::Meetings(room, r)).await
    }

    pub async fn export(&self, room: String, meeting: String) -> Result<Vec<ChatRow>, String> {
        self.ask(|r| Job::Export(room, meeting, r)).await
    }

    #[cfg(test)]
    async fn prune_before(&self, cutoff_ms: u64) -> Result<usize, String> {
        self.ask(|r| Job::Prune(cutoff_ms, r)).await
    }
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "schema version {version} is newer than this ting knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn load_rooms(conn: &Connection) -> rusqlite::Result<Vec<RoomRow>> {
    let mut stmt = conn.prepare(
        "SELECT name, starts_at, ends_at, passcode, lobby, capacity, e2ee_required,
                allow_unmute, created_at FROM rooms ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RoomRow {
            name: r.get(0)?,
            starts_at: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
            ends_at: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
            passcode: r.get(3)?,
            lobby: r.get(4)?,
            capacity: r.get::<_, Option<i64>>(5)?.map(|v| v as usize),
            e2ee_required: r.get(6)?,
            allow_unmute: r.get(7)?,
            created_at: r.get::<_, i64>(8)? as u64,
        })
    })?;
    rows.collect()
}

fn load_deleted(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let cutoff = now_ms() / 1000;
    conn.execute(
        "DELETE FROM deleted_rooms WHERE deleted_at < ?1",
        params![cutoff.saturating_sub(TOMBSTONE_SECS) as i64],
    )?;
    let mut stmt = conn.prepare("SELECT name, deleted_at FROM deleted_rooms")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

fn prune(conn: &Connection, cutoff_ms: u64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM chat WHERE at_ms < ?1",
        params![cutoff_ms as i64],
    )
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn run(conn: Connection, rx: mpsc::Receiver<Job>, retention: Option<Duration>) {
    let every = Duration::from_secs(3600);
    let mut next_prune = std::time::Instant::now() + every;
    loop {
        let job = match rx.recv_timeout(every) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(job) = job {
            handle(&conn, job);
        }
        if let Some(r) = retention
            && std::time::Instant::now() >= next_prune
        {
            next_prune = std::time::Instant::now() + every;
            match prune(&conn, now_ms().saturating_sub(r.as_millis() as u64)) {
                Ok(n) if n > 0 => info!(deleted = n, "chat older than its retention deleted"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "pruning the chat archive failed"),
            }
        }
    }
}

fn handle(conn: &Connection, job: Job) {
    let text = |e: rusqlite::Error| e.to_string();
    match job {
        Job::SaveRoom(row, reply) => {
            let r = conn
                .execute(
                    "INSERT INTO rooms (name, starts_at, ends_at, passcode, lobby, capacity,
                        e2ee_required, allow_unmute, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT(name) DO UPDATE SET starts_at = ?2, ends_at = ?3,
                        passcode = ?4, lobby = ?5, capacity = ?6, e2ee_required = ?7,
                        allow_unmute = ?8",
                    params![
                        row.name,
                        row.starts_at.map(|v| v as i64),
                        row.ends_at.map(|v| v as i64),
                        row.passcode,
                        row.lobby,
                        row.capacity.map(|v| v as i64),
                        row.e2ee_required,
                        row.allow_unmute,
                        row.created_at as i64,
                    ],
                )
                .map(drop)
                .map_err(text);
            let _ = reply.send(r);
        }
        Job::DeleteRoom(name, at, reply) => {
            let r = (|| {
                let tx = conn.unchecked_transaction()?;
                tx.execute("DELETE FROM rooms WHERE name = ?1", params![name])?;
                tx.execute(
                    "INSERT INTO deleted_rooms (name, deleted_at) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET deleted_at = ?2",
                    params![name, at as i64],
                )?;
                tx.commit()
            })()
            .map_err(text);
            let _ = reply.send(r);
        }
        Job::Archive(row) => {
            if let Err(e) = conn.execute(
                "INSERT INTO chat (room, meeting, at_ms, sender, sender_name, recipient, text, e2ee)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    row.room,
                    row.meeting,
                    row.at_ms as i64,
                    row.from,
                    row.name,
                    row.to,
                    row.text,
                    row.e2ee
                ],
            ) {
                warn!(error = %e, "a chat message could not be archived");
            }
        }
        Job::Meetings(room, reply) => {
            let r = (|| {
                let mut stmt = conn.prepare(
                    "SELECT meeting, MIN(at_ms), MAX(at_ms), COUNT(*) FROM chat
                     WHERE room = ?1 GROUP BY meeting ORDER BY MIN(at_ms)",
                )?;
                let rows = stmt.query_map(params![room], |r| {
                    Ok(MeetingRow {
                        meeting: r.get(0)?,
                        first_ms: r.get::<_, i64>(1)? as u64,
                        last_ms: r.get::<_, i64>(2)? as u64,
                        messages: r.get::<_, i64>(3)? as u64,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })()
            .map_err(text);
            let _ = reply.send(r);
        }
        Job::Export(room, meeting, reply) => {
            let r = (|| {
                let mut stmt = conn.prepare(
                    "SELECT at_ms, sender, sender_name, recipient, text, e2ee FROM chat
                     WHERE room = ?1 AND meeting = ?2 ORDER BY at_ms, id",
                )?;
                let rows = stmt.query_map(params![room, meeting], |r| {
                    Ok(ChatRow {
                        room: room.clone(),
                        meeting: meeting.clone(),
                        at_ms: r.get::<_, i64>(0)? as u64,
                        from: r.get(1)?,
                        name: r.get(2)?,
                        to: r.get(3)?,
                        text: r.get(4)?,
                        e2ee: r.get(5)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })()
            .map_err(text);
            let _ = reply.send(r);
        }
        #[cfg(test)]
        Job::Prune(cutoff, reply) => {
            let _ = reply.send(prune(conn, cutoff).map_err(text));
        }
    }
}

/// Whether a row exists; for tests that look into the file.
#[cfg(test)]
fn count(conn: &Connection, sql: &str) -> i64 {
    use rusqlite::OptionalExtension;
    conn.query_row(sql, [], |r| r.get(0))
        .optional()
        .unwrap()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> RoomRow {
        RoomRow {
            name: name.into(),
            starts_at: Some(10),
            ends_at: None,
            passcode: Some("aa:bb".into()),
            lobby: true,
            capacity: Some(12),
            e2ee_required: false,
            allow_unmute: true,
            created_at: 1,
        }
    }

    fn chat(meeting: &str, at_ms: u64, text: &str) -> ChatRow {
        ChatRow {
            room: "r".into(),
            meeting: meeting.into(),
            at_ms,
            from: "0000000000000001".into(),
            name: "Aino".into(),
            to: None,
            e2ee: at_ms == 6_000,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn rooms_survive_a_restart_and_chat_is_pruned_by_age() {
        let dir = std::env::temp_dir().join(format!("ting-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ting.db");
        let _ = std::fs::remove_file(&path);
        let p = path.to_str().unwrap().to_owned();
        {
            let (store, loaded) = Store::open(&p, None).unwrap();
            assert!(loaded.rooms.is_empty());
            store.save_room(row("a")).await.unwrap().unwrap();
            store.save_room(row("b")).await.unwrap().unwrap();
            let mut changed = row("a");
            changed.lobby = false;
            store.save_room(changed).await.unwrap().unwrap();
            let deleted_at = now_ms() / 1000;
            store
                .delete_room("b".into(), deleted_at)
                .await
                .unwrap()
                .unwrap();
            assert!(store.archive(chat("m1", 1_000, "old")));
            assert!(store.archive(chat("m1", 5_000, "new")));
            assert!(store.archive(chat("m2", 6_000, "other meeting")));
            let meetings = store.meetings("r".into()).await.unwrap();
            assert_eq!(meetings.len(), 2);
            assert_eq!(meetings[0].messages, 2);
            let sealed = store.export("r".into(), "m2".into()).await.unwrap();
            assert!(sealed[0].e2ee, "the encrypted mark survives the archive");
            assert!(
                serde_json::to_string(&sealed[0])
                    .unwrap()
                    .contains(r#""e2ee":true"#)
            );
            let rows = store.export("r".into(), "m1".into()).await.unwrap();
            assert_eq!(
                rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
                vec!["old", "new"]
            );
            // Retention: everything before the cutoff goes, nothing after.
            assert_eq!(store.prune_before(2_000).await.unwrap(), 1);
            let rows = store.export("r".into(), "m1".into()).await.unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].text, "new");
        }
        let (_store, loaded) = Store::open(&p, None).unwrap();
        let rooms = loaded.rooms;
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms[0].name, "a");
        assert!(!rooms[0].lobby);
        assert_eq!(rooms[0].capacity, Some(12));
        assert_eq!(loaded.deleted.len(), 1);
        assert_eq!(loaded.deleted[0].0, "b");
        let conn = Connection::open(&path).unwrap();
        assert_eq!(count(&conn, "PRAGMA user_version"), MIGRATIONS.len() as i64);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let e = Store::open("/proc/ting-cannot-write-here/ting.db", None).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("store.path"), "{text}");
        assert!(text.contains("/proc/ting-cannot-write-here"), "{text}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = std::env::temp_dir().join(format!("ting-store-new-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ting.db");
        let _ = std::fs::remove_file(&path);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = Store::open(path.to_str().unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
