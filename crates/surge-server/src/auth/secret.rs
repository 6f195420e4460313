//! The HS256 secret: from `auth.jwt_secret`, or the embedded mode's
//! `<data_dir>/jwt-secret`, created at the first start.
//!
//! Whoever holds the secret mints admin tokens, so a secret that is empty,
//! short or readable by others is refused, never used. The file is created
//! so that nobody can see it half-written: the secret goes to a private
//! temporary file, is synced, and is then hard-linked to its name. A link
//! never replaces an existing file, so of two processes starting at once
//! exactly one wins and the other reads the winner's secret.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::RngCore;

use crate::config::{AuthSettings, Secret};

/// File name of the generated secret inside the data dir.
pub const SECRET_FILE: &str = "jwt-secret";

/// The shortest secret accepted, in bytes: HS256 wants a key at least as
/// long as its 256-bit hash.
pub const SECRET_LEN_MIN: usize = 32;

/// How long a short secret file is re-read before it is refused: a writer
/// of an older version may still be filling it.
const SHORT_FILE_WAIT: Duration = Duration::from_secs(2);

/// The configured secret, or the data dir's, created on first use.
pub fn load_or_create_secret(settings: &AuthSettings, data_dir: &Path) -> anyhow::Result<Secret> {
    if let Some(secret) = &settings.jwt_secret {
        check_len(secret.expose().len(), "auth.jwt_secret")?;
        return Ok(secret.clone());
    }
    let path = data_dir.join(SECRET_FILE);
    loop {
        if let Some(secret) = read_secret_file(&path)? {
            return Ok(secret);
        }
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        if let Some(secret) = create_secret_file(&path, data_dir)? {
            return Ok(secret);
        }
        // Another process linked its file first: read theirs.
    }
}

fn check_len(len: usize, what: &str) -> anyhow::Result<()> {
    if len < SECRET_LEN_MIN {
        bail!("{what} holds {len} bytes; a JWT secret needs at least {SECRET_LEN_MIN}");
    }
    Ok(())
}

/// The secret in `path`, `None` when there is no such file.
fn read_secret_file(path: &Path) -> anyhow::Result<Option<Secret>> {
    let deadline = std::time::Instant::now() + SHORT_FILE_WAIT;
    loop {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        check_private(path, &metadata)?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let secret = text.trim();
        if secret.len() >= SECRET_LEN_MIN {
            return Ok(Some(Secret::new(secret.to_owned())));
        }
        if std::time::Instant::now() >= deadline {
            check_len(secret.len(), &path.display().to_string()).context(
                "delete the file to have a new secret generated (tokens signed with the old one stop working)",
            )?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A secret file must be readable by its owner alone.
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!("{} is open to group or others (mode {mode:o}); `chmod 600` it", path.display());
        }
    }
    #[cfg(not(unix))]
    let _ = (path, metadata);
    Ok(())
}

/// Writes a new secret and links it to `path`; `None` when `path` appeared
/// meanwhile (another process won).
fn create_secret_file(path: &Path, data_dir: &Path) -> anyhow::Result<Option<Secret>> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let temporary =
        TemporaryFile(data_dir.join(format!(".{SECRET_FILE}.{}.{:016x}", std::process::id(), rand::random::<u64>())));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary.0).with_context(|| format!("creating {}", temporary.0.display()))?;
    file.write_all(hex.as_bytes())?;
    file.sync_all()?;
    drop(file);
    match std::fs::hard_link(&temporary.0, path) {
        Ok(()) => {
            drop(temporary);
            sync_dir(data_dir)?;
            Ok(Some(Secret::new(hex)))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The new name lasts only once its directory is synced.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Removed when dropped, whatever happened.
struct TemporaryFile(PathBuf);

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(dir: &Path) -> anyhow::Result<Secret> {
        load_or_create_secret(&AuthSettings::default(), dir)
    }

    #[test]
    fn the_generated_secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = generated(dir.path()).expect("create");
        let second = generated(dir.path()).expect("reuse");
        assert_eq!(first, second);
        assert_eq!(first.expose().len(), 64);
        // Nothing but the secret is left behind.
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE)]);
    }

    #[cfg(unix)]
    #[test]
    fn the_generated_secret_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        generated(dir.path()).expect("create");
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE)).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_empty_or_short_secret_file_is_refused() {
        for content in ["", "\n", "short-secret"] {
            let dir = tempfile::tempdir().expect("tempdir");
            write_private(&dir.path().join(SECRET_FILE), content);
            let error = format!("{:#}", generated(dir.path()).expect_err("a short secret must be refused"));
            assert!(error.contains("at least 32"), "{error}");
        }
    }

    #[test]
    fn a_short_file_that_fills_up_while_waiting_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SECRET_FILE);
        write_private(&path, "");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                write_private(&path, &"s".repeat(40));
            })
        };
        let secret = generated(dir.path()).expect("the writer finished within the wait");
        writer.join().expect("writer");
        assert_eq!(secret.expose(), "s".repeat(40));
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SECRET_FILE);
        write_private(&path, &"s".repeat(64));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = format!("{:#}", generated(dir.path()).expect_err("an open secret must be refused"));
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn a_short_configured_secret_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = AuthSettings { jwt_secret: Some(Secret::new(String::new())), ..AuthSettings::default() };
        assert!(load_or_create_secret(&settings, dir.path()).is_err());
        assert!(!dir.path().join(SECRET_FILE).exists(), "a configured secret writes no file");
    }

    #[test]
    fn processes_starting_at_once_agree_on_one_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let racers: Vec<_> = (0..16)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || generated(&path).expect("secret"))
            })
            .collect();
        let secrets: Vec<Secret> = racers.into_iter().map(|r| r.join().expect("racer")).collect();
        assert!(secrets.iter().all(|s| *s == secrets[0]), "every racer reads the winner's secret");
        assert_eq!(generated(&path).expect("read"), secrets[0]);
    }

    fn write_private(path: &Path, content: &str) {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path).and_then(|mut f| f.write_all(content.as_bytes())).expect("write");
    }
}
