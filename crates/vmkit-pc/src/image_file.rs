//! Reading boot images (kernel, initrd, flat binaries, firmware) with a size limit.
//!
//! An image larger than the guest's RAM cannot be loaded, so it is refused before it is
//! read: a regular file by its length, anything else (`/dev/zero`, a pipe) by reading at
//! most one byte past the limit. Nothing is read whole first.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The largest image any loader accepts when no RAM size is known: the 32-bit boot
/// protocols load below 4 GiB.
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;

/// Reads `path` (`what` names it in errors: "kernel", "initrd", ...), refusing it when it
/// holds more than `limit` bytes.
pub fn read_image(what: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>> {
    let io_error = |source| Error::ImageFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let too_large = |size: Option<u64>| Error::ImageTooLarge {
        what,
        path: path.to_path_buf(),
        size,
        limit,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if metadata.is_dir() {
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory",
        )));
    }
    if metadata.is_file() && metadata.len() > limit {
        return Err(too_large(Some(metadata.len())));
    }
    let capacity = if metadata.is_file() {
        metadata.len()
    } else {
        0
    };
    let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(None));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_within_the_limit_is_read_whole() {
        let dir = tempfile_dir();
        let path = dir.join("small");
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_image("kernel", &path, 100).unwrap(), vec![7u8; 100]);
    }

    #[test]
    fn a_regular_file_over_the_limit_is_refused_by_its_length() {
        let dir = tempfile_dir();
        let path = dir.join("sparse");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(20 << 30).unwrap();
        let err = read_image("initrd", &path, 128 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("initrd") && err.contains("sparse"), "{err}");
        assert!(err.contains("21474836480 bytes"), "{err}");
        assert!(err.contains("134217728"), "{err}");
    }

    #[test]
    fn an_endless_device_is_cut_at_the_limit() {
        let err = read_image("kernel", Path::new("/dev/zero"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/dev/zero") && err.contains("more than 1048576"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_and_a_directory_are_named() {
        let err = read_image("kernel", Path::new("/nonexistent/k"), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/k"), "{err}");
        let err = read_image("kernel", Path::new("/"), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("directory"), "{err}");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vmkit-image-file-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
