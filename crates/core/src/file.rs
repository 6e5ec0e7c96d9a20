//! Reading the small text files idbridge is pointed at (config files, world files, the files
//! they name) without trusting what the path turns out to be.
//!
//! [`read_text_file`] reads only **regular files** (a symlink to one is fine) of at most a
//! given size. `/dev/zero` would otherwise be read until memory runs out, a FIFO would block the
//! process until someone writes to it, and a directory gives a confusing OS error; each is
//! refused up front with an error that says what the path is. The size is checked on the open
//! file and enforced while reading, so a file that grows meanwhile is still cut off.

use std::io::{self, Read as _};
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

/// Size cap for configuration-like files: 4 MiB. The largest real ones (a world file with a
/// few dozen PEM keys, a config with hundreds of routes) are tens of kilobytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What kind of file a path is, in words, for errors.
fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn not_regular(ft: std::fs::FileType) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is not a regular file", kind(ft)),
    )
}

fn too_large(max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the {max}-byte limit"),
    )
}

/// Reads a regular file of at most `max_bytes` bytes as UTF-8. The error (to be wrapped with
/// the path by the caller) says what else the path is, or that it is too large.
pub fn read_text_file(path: &Path, max_bytes: u64) -> io::Result<String> {
    // Checked before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let file = std::fs::File::open(path)?;
    // And again on what was opened, in case the path was swapped in between.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    if meta.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max_bytes {
        return Err(too_large(max_bytes));
    }
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// [`read_text_file`] with [`MAX_CONFIG_FILE_BYTES`].
pub fn read_config_file(path: &Path) -> io::Result<String> {
    read_text_file(path, MAX_CONFIG_FILE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_only_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "a = 1\n").unwrap();
        assert_eq!(read_text_file(&ok, 6).unwrap(), "a = 1\n");
        let err = read_text_file(&ok, 5).unwrap_err();
        assert!(err.to_string().contains("5-byte limit"), "{err}");
        let err = read_config_file(dir.path()).unwrap_err();
        assert_eq!(err.to_string(), "a directory is not a regular file");
        let err = read_config_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.to_string(), "a character device is not a regular file");
        // A FIFO is refused at once instead of blocking for a writer.
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = read_config_file(&fifo).unwrap_err();
        assert_eq!(err.to_string(), "a FIFO is not a regular file");
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read_config_file(&link).unwrap(), "a = 1\n");
        std::fs::write(&ok, [0xff, 0xfe]).unwrap();
        assert!(read_config_file(&ok).is_err());
        assert_eq!(
            read_config_file(&dir.path().join("missing"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
