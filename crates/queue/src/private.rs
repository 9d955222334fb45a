//! Keeping the queue private to the relay: the folder is `0700` and the
//! database files `0600`, whatever the process umask, because every queued
//! message (bodies, addresses) sits in them in the clear.
//!
//! Owns: creating the folder and `queue.sqlite3` with those modes before
//! SQLite touches them (SQLite gives `-wal`, `-shm` and `-journal` the
//! database file's mode, and when run as root its owner too), tightening
//! looser modes found at start, and describing what could not be tightened
//! with the `chmod` that fixes it.
//!
//! "Could not" is decided by the kernel, not guessed: a mode is changed when
//! `chmod(2)` allows it, i.e. the relay owns the file (or runs as root).
//! Files in the folder other than the database's own are left alone; the
//! folder's `0700` already keeps other users out of them.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::schema::DB_FILE;

/// The queue folder's mode: only its owner may list or enter it.
pub const FOLDER_MODE: u32 = 0o700;

/// The mode of every database file: only its owner may read or write it.
pub const FILE_MODE: u32 = 0o600;

/// Suffixes of the files SQLite keeps beside the database.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// A path whose mode lets users other than its owner in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loose {
    pub path: PathBuf,
    /// Its permission bits as found (`0o755`).
    pub mode: u32,
    /// The mode it should have: [`FOLDER_MODE`] or [`FILE_MODE`].
    pub want: u32,
    /// Its owner's uid: who (besides root) can run the fix.
    pub owner: u32,
}

/// What [`tighten`] did with the loose paths it found.
#[derive(Debug, Default)]
pub struct Tightened {
    /// Now at their wanted mode.
    pub fixed: Vec<Loose>,
    /// Still loose, with why `chmod` failed (typically: not their owner).
    pub left: Vec<(Loose, io::Error)>,
}

/// What a look at the queue folder found, without changing anything (for
/// `check`).
#[derive(Debug, PartialEq, Eq)]
pub enum Privacy {
    /// No folder yet: the first `serve` creates it private.
    Missing,
    /// The folder and every database file are private.
    Private,
    /// These paths let other users in.
    Loose(Vec<Loose>),
}

/// Creates `folder` (its missing parents with the default mode) as
/// [`FOLDER_MODE`] and, inside it, an empty `queue.sqlite3` as
/// [`FILE_MODE`], unless they exist; the modes are set explicitly, so the
/// umask cannot loosen them.
pub(crate) fn create(folder: &Path) -> io::Result<()> {
    if !folder.is_dir() {
        if let Some(parent) = folder.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        match DirBuilder::new().mode(FOLDER_MODE).create(folder) {
            Ok(()) => std::fs::set_permissions(folder, Permissions::from_mode(FOLDER_MODE))?,
            // Created meanwhile by someone else: checked like any folder.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let db = folder.join(DB_FILE);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&db)
    {
        Ok(file) => file.set_permissions(Permissions::from_mode(FILE_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The folder and the database files in it that exist and let other users
/// in; an error only if the folder itself cannot be examined. A file this
/// process may not even look at (a private folder of another user, seen by
/// `check`) is not counted: other users cannot reach it either.
pub fn loose(folder: &Path) -> io::Result<Vec<Loose>> {
    let mut found = Vec::new();
    let checked = std::iter::once((folder.to_path_buf(), FOLDER_MODE))
        .chain(database_files(folder).map(|path| (path, FILE_MODE)));
    for (path, want) in checked {
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if path == folder => return Err(e),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            found.push(Loose {
                path,
                mode,
                want,
                owner: meta.uid(),
            });
        }
    }
    Ok(found)
}

/// Looks without changing anything.
pub fn inspect(folder: &Path) -> io::Result<Privacy> {
    if !folder.exists() {
        return Ok(Privacy::Missing);
    }
    let found = loose(folder)?;
    Ok(if found.is_empty() {
        Privacy::Private
    } else {
        Privacy::Loose(found)
    })
}

/// Sets every loose path in `folder` to its wanted mode where `chmod(2)`
/// allows it, except those `earlier` already tried and left.
pub(crate) fn tighten(folder: &Path, earlier: &Tightened) -> io::Result<Tightened> {
    let mut outcome = Tightened::default();
    for found in loose(folder)? {
        if earlier.left.iter().any(|(l, _)| l.path == found.path) {
            continue;
        }
        match std::fs::set_permissions(&found.path, Permissions::from_mode(found.want)) {
            Ok(()) => outcome.fixed.push(found),
            Err(e) => outcome.left.push((found, e)),
        }
    }
    Ok(outcome)
}

impl Tightened {
    /// Adds what a later pass did.
    pub(crate) fn absorb(&mut self, later: Tightened) {
        self.fixed.extend(later.fixed);
        self.left.extend(later.left);
    }

    /// Logs what was fixed and, for what was not, the command that fixes it.
    pub(crate) fn log(&self) {
        for found in &self.fixed {
            tracing::warn!(
                path = %found.path.display(),
                was = %octal(found.mode),
                now = %octal(found.want),
                "The queue was readable by other local users; its permissions are tightened."
            );
        }
        if !self.left.is_empty() {
            let loose: Vec<Loose> = self.left.iter().map(|(l, _)| l.clone()).collect();
            for (found, error) in &self.left {
                tracing::warn!(
                    path = %found.path.display(),
                    mode = %octal(found.mode),
                    owner_uid = found.owner,
                    error = %error,
                    "The queue is readable by other local users and the relay cannot change that (it does not own this file)."
                );
            }
            tracing::warn!(
                fix = %fix_command(&loose),
                "To keep queued mail private, run this as the files' owner or root."
            );
        }
    }
}

/// The `chmod` commands that make `loose` private, joined by `&&`.
pub fn fix_command(loose: &[Loose]) -> String {
    let mut commands = Vec::new();
    for want in [FOLDER_MODE, FILE_MODE] {
        let paths: Vec<String> = loose
            .iter()
            .filter(|l| l.want == want)
            .map(|l| relay_config::shell_quote(&l.path))
            .collect();
        if !paths.is_empty() {
            commands.push(format!("chmod {want:o} {}", paths.join(" ")));
        }
    }
    commands.join(" && ")
}

/// `0o644` as `0644`.
pub fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

/// `queue.sqlite3` and the files SQLite keeps beside it, in `folder`.
fn database_files(folder: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    std::iter::once(folder.join(DB_FILE)).chain(
        SIDE_FILES
            .iter()
            .map(move |suffix| folder.join(format!("{DB_FILE}{suffix}"))),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_the_folder_0700_and_the_database_0600() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b/queue");
        create(&folder).unwrap();
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(DB_FILE)), 0o600);
        assert_eq!(inspect(&folder).unwrap(), Privacy::Private);
        // Creating again changes nothing and keeps what is there.
        std::fs::write(folder.join(DB_FILE), b"x").unwrap();
        create(&folder).unwrap();
        assert_eq!(std::fs::read(folder.join(DB_FILE)).unwrap(), b"x");
    }

    #[test]
    fn tightens_a_loose_folder_and_database_files_but_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("queue");
        std::fs::create_dir(&folder).unwrap();
        std::fs::set_permissions(&folder, Permissions::from_mode(0o755)).unwrap();
        for name in [DB_FILE, "queue.sqlite3-wal", "notes.txt"] {
            std::fs::write(folder.join(name), b"").unwrap();
            std::fs::set_permissions(folder.join(name), Permissions::from_mode(0o644)).unwrap();
        }
        let Privacy::Loose(found) = inspect(&folder).unwrap() else {
            panic!("not loose");
        };
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            fix_command(&found),
            format!(
                "chmod 700 {f} && chmod 600 {f}/queue.sqlite3 {f}/queue.sqlite3-wal",
                f = folder.display()
            )
        );
        let done = tighten(&folder, &Tightened::default()).unwrap();
        assert_eq!((done.fixed.len(), done.left.len()), (3, 0));
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(DB_FILE)), 0o600);
        assert_eq!(mode(&folder.join("queue.sqlite3-wal")), 0o600);
        assert_eq!(mode(&folder.join("notes.txt")), 0o644);
        assert_eq!(inspect(&folder).unwrap(), Privacy::Private);
    }

    #[test]
    fn a_missing_folder_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(&dir.path().join("nope")).unwrap(), Privacy::Missing);
    }

    #[test]
    fn paths_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(
            relay_config::shell_quote(Path::new("/var/spool/q-1")),
            "/var/spool/q-1"
        );
        assert_eq!(
            relay_config::shell_quote(Path::new("/my queue")),
            "'/my queue'"
        );
        assert_eq!(relay_config::shell_quote(Path::new("/it's")), r"'/it'\''s'");
    }
}
