//! Tree blobs: one directory's entries, sorted by name bytes.

use serde::{Deserialize, Serialize};

use crate::repo::ids::{BlobId, FileHash};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NodeRecord", into = "NodeRecord")]
pub struct Node {
    /// The name as the file system stores it: bytes, not necessarily UTF-8.
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    /// Bytes of content (files), 0 otherwise.
    pub size: u64,
    /// Content blobs in order (files).
    pub content: Vec<BlobId>,
    /// blake3 of the whole content (files).
    pub hash: Option<FileHash>,
    /// Tree blob of the directory's entries (directories).
    pub subtree: Option<BlobId>,
    /// Link target as bytes (symlinks).
    pub target: Option<Vec<u8>>,
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A directory listing as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// The JSON shape of a node: names that are not clean UTF-8 go to `name_hex`.
#[derive(Serialize, Deserialize)]
struct NodeRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_hex: Option<String>,
    #[serde(rename = "type")]
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    content: Vec<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<FileHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subtree: Option<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_hex: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl From<Node> for NodeRecord {
    fn from(n: Node) -> Self {
        let (name, name_hex) = super::split_bytes(&n.name);
        let (target, target_hex) = match &n.target {
            Some(t) => super::split_bytes(t),
            None => (None, None),
        };
        NodeRecord {
            name,
            name_hex,
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
            inode: n.inode,
            size: n.size,
            content: n.content,
            hash: n.hash,
            subtree: n.subtree,
            target,
            target_hex,
        }
    }
}

/// Why a stored node cannot be a [`Node`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeError {
    #[error("a node has no name")]
    NoName,
    #[error("invalid node name {0:?}")]
    BadName(String),
    #[error("a file node has no hash")]
    NoHash,
    #[error("a directory node has no subtree")]
    NoSubtree,
    #[error("a symlink node has no target")]
    NoTarget,
    #[error(transparent)]
    Bytes(#[from] super::BytesError),
}

impl TryFrom<NodeRecord> for Node {
    type Error = NodeError;
    fn try_from(r: NodeRecord) -> Result<Self, NodeError> {
        let name = super::join_bytes(r.name, r.name_hex, "name")?.ok_or(NodeError::NoName)?;
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            return Err(NodeError::BadName(
                String::from_utf8_lossy(&name).into_owned(),
            ));
        }
        let target = super::join_bytes(r.target, r.target_hex, "target")?;
        match r.kind {
            NodeKind::File if r.hash.is_none() => return Err(NodeError::NoHash),
            NodeKind::Dir if r.subtree.is_none() => return Err(NodeError::NoSubtree),
            NodeKind::Symlink if target.is_none() => return Err(NodeError::NoTarget),
            _ => {}
        }
        Ok(Node {
            name,
            kind: r.kind,
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            mtime_ns: r.mtime_ns,
            ctime_ns: r.ctime_ns,
            inode: r.inode,
            size: r.size,
            content: r.content,
            hash: r.hash,
            subtree: r.subtree,
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_and_targets_round_trip_through_hex() {
        let node = Node {
            name: vec![b'a', 0xff, b'\n'],
            kind: NodeKind::Symlink,
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 3,
            size: 0,
            content: vec![],
            hash: None,
            subtree: None,
            target: Some(vec![0xfe, b'/', b'x']),
        };
        let json = serde_json::to_string(&node).unwrap();
        assert!(json.contains("\"name_hex\":\"61ff0a\""), "{json}");
        assert_eq!(serde_json::from_str::<Node>(&json).unwrap(), node);
    }

    #[test]
    fn a_node_named_dot_dot_is_refused() {
        let json = r#"{"name":"..","type":"dir","mode":493,"uid":0,"gid":0,"mtime_ns":0,"ctime_ns":0,"inode":0,"subtree":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        assert!(serde_json::from_str::<Node>(json).is_err());
    }
}
