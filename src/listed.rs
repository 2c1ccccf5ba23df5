//! Kept files whose content stays on disk: the lists that grow with an
//! image's file count (pip's RECORD files name every file a distribution
//! installed; a python tree of a million files has a million lines of
//! them). A scan appends their content to a scratch file; what stays in
//! memory is where each one is.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::layer::ImagePath;

#[derive(Default)]
pub(crate) struct Listed {
    file: Option<File>,
    end: u64,
    at: HashMap<ImagePath, (u64, u64)>,
}

impl std::fmt::Debug for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listed({} files, {} bytes)", self.at.len(), self.end)
    }
}

fn listed_error(err: impl std::fmt::Display) -> Error {
    Error::new(format!("cannot keep a listing file on disk: {err}"))
        .hint("check that the temporary directory (TMPDIR) is writable and has space")
}

impl Listed {
    /// Files given in memory (for tests and small images alike).
    #[cfg(test)]
    pub(crate) fn from_map(files: &HashMap<ImagePath, Vec<u8>>) -> Listed {
        let mut out = Listed::default();
        for (path, data) in files {
            let at = out.append(data).expect("a scratch file");
            out.place(path.clone(), at);
        }
        out
    }

    /// Appends content; where it is, for [`Listed::place`].
    pub(crate) fn append(&mut self, data: &[u8]) -> Result<(u64, u64)> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self
                .file
                .insert(tempfile::tempfile().map_err(listed_error)?),
        };
        file.write_all(data).map_err(listed_error)?;
        let at = (self.end, data.len() as u64);
        self.end += data.len() as u64;
        Ok(at)
    }

    /// Names content appended before as the file at `path`.
    pub(crate) fn place(&mut self, path: ImagePath, at: (u64, u64)) {
        self.at.insert(path, at);
    }

    /// The content of the file at `path`, read from disk.
    pub(crate) fn get(&self, path: &ImagePath) -> Option<Vec<u8>> {
        let &(offset, len) = self.at.get(path)?;
        let mut data = vec![0u8; len as usize];
        match self.file.as_ref()?.read_exact_at(&mut data, offset) {
            Ok(()) => Some(data),
            Err(err) => {
                tracing::error!(
                    "reading {} back from disk failed: {err}",
                    path.display_abs()
                );
                None
            }
        }
    }

    pub(crate) fn paths(&self) -> impl Iterator<Item = &ImagePath> {
        self.at.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_placed() {
        let mut listed = Listed::default();
        let a = listed.append(b"first").unwrap();
        let b = listed.append(b"second one").unwrap();
        listed.place(ImagePath::from_static("x/RECORD"), b);
        listed.place(ImagePath::from_static("y/RECORD"), a);
        assert_eq!(
            listed.get(&ImagePath::from_static("x/RECORD")).unwrap(),
            b"second one"
        );
        assert_eq!(
            listed.get(&ImagePath::from_static("y/RECORD")).unwrap(),
            b"first"
        );
        assert!(listed.get(&ImagePath::from_static("z")).is_none());
        assert_eq!(listed.paths().count(), 2);
    }
}
