//! Tree blobs: one directory's entries, sorted by name bytes, with the metadata a restore
//! brings back (docs/FORMAT.md §7.3).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::repo::ids::{BlobId, FileHash};

/// The tree revision this build writes. Revision 1 (the first release) recorded mode, owner
/// ids, times and content only; revision 2 adds extended attributes (and with them POSIX
/// ACLs and Samba's Windows ACLs), owner and group names, hard-link groups, holes and
/// special files. A revision-1 tree has no `format` field.
pub const TREE_FORMAT: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    /// Recorded, never recreated: a socket is made by the program that listens on it.
    Socket,
    #[serde(rename = "chardev")]
    CharDevice,
    #[serde(rename = "blockdev")]
    BlockDevice,
}

impl NodeKind {
    pub fn is_special(self) -> bool {
        matches!(
            self,
            NodeKind::Fifo | NodeKind::Socket | NodeKind::CharDevice | NodeKind::BlockDevice
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "folder",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "FIFO",
            NodeKind::Socket => "socket",
            NodeKind::CharDevice => "character device",
            NodeKind::BlockDevice => "block device",
        }
    }
}

/// One extended attribute. Values are shared: the nodes of a tree that carry the same ACL
/// hold one copy of it, in the tree blob and in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    pub name: Box<[u8]>,
    pub value: Arc<[u8]>,
}

/// A run of a sparse file that is not stored: it reads as zeros and is restored as a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hole(pub u64, pub u64);

impl Hole {
    pub fn offset(&self) -> u64 {
        self.0
    }
    pub fn length(&self) -> u64 {
        self.1
    }
    pub fn end(&self) -> u64 {
        self.0 + self.1
    }
}

/// Metadata most nodes do not have, kept out of line so that a plan of 200,000 plain files
/// does not carry it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    /// Every extended attribute that could be read, sorted by name: `user.*`, `trusted.*`
    /// and `security.*` (Samba's `security.NTACL`), and POSIX ACLs as the kernel's
    /// `system.posix_acl_access` and `system.posix_acl_default`.
    pub xattrs: Vec<Xattr>,
    /// A file with more than one link: its link count and device. Files of one snapshot with
    /// the same device and inode are one file, restored as hard links.
    pub links: u64,
    pub device: u64,
    /// A sparse file's holes, in order, not overlapping: `content` is the rest.
    pub holes: Vec<Hole>,
    /// Character and block devices.
    pub major: u32,
    pub minor: u32,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Bytes of content (files, holes included), 0 otherwise.
    pub size: u64,
    /// Content blobs in order (files): the file's bytes outside its holes.
    pub content: Vec<BlobId>,
    /// blake3 of the whole content, holes read as zeros (files).
    pub hash: Option<FileHash>,
    /// Tree blob of the directory's entries (directories).
    pub subtree: Option<BlobId>,
    /// Link target as bytes (symlinks).
    pub target: Option<Vec<u8>>,
    /// Owner and group names at backup time, where the machine had them.
    pub user: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
    pub extra: Option<Box<Extra>>,
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    pub fn xattrs(&self) -> &[Xattr] {
        self.extra.as_deref().map_or(&[], |e| &e.xattrs)
    }

    pub fn holes(&self) -> &[Hole] {
        self.extra.as_deref().map_or(&[], |e| &e.holes)
    }

    /// The hard-link group of a file with more than one link: (device, inode).
    pub fn link_group(&self) -> Option<(u64, u64)> {
        let e = self.extra.as_deref()?;
        (self.kind == NodeKind::File && e.links > 1).then_some((e.device, self.inode))
    }

    /// Whether it carries a POSIX or Windows ACL.
    pub fn has_acl(&self) -> bool {
        self.xattrs().iter().any(|x| is_acl(&x.name))
    }

    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Drop an empty `extra`, so that equal metadata compares and serializes equal.
    pub fn tidy(&mut self) {
        if self
            .extra
            .as_deref()
            .is_some_and(|e| *e == Extra::default())
        {
            self.extra = None;
        }
    }
}

/// The attributes that hold an ACL: POSIX ACLs, Samba's copy of the Windows ACL, and the
/// NFSv4 ACLs some NAS file systems keep.
pub fn is_acl(name: &[u8]) -> bool {
    matches!(
        name,
        b"system.posix_acl_access"
            | b"system.posix_acl_default"
            | b"security.NTACL"
            | b"system.nfs4_acl"
            | b"system.nfs4acl"
    )
}

/// A directory listing as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// The revision it was written in ([`TREE_FORMAT`] for new trees; 1 for the first
    /// release's, which recorded no extended attributes, names, links, holes or special
    /// files: their absence there says nothing about the files).
    pub format: u32,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: Vec::new(),
            format: TREE_FORMAT,
        }
    }
}

impl Tree {
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// The JSON shape of a tree: nodes, and the extended-attribute values they refer to, each
/// distinct value once, in order of first use.
#[derive(Serialize, Deserialize)]
struct TreeRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<u32>,
    nodes: Vec<NodeRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    xattr_values: Vec<String>,
}

/// Distinct values, as they are met.
#[derive(Default)]
struct Values {
    hex: Vec<String>,
    seen: HashMap<Arc<[u8]>, usize>,
}

impl Values {
    fn index(&mut self, v: &Arc<[u8]>) -> usize {
        if let Some(&i) = self.seen.get(v) {
            return i;
        }
        self.hex.push(hex::encode(v));
        self.seen.insert(v.clone(), self.hex.len() - 1);
        self.hex.len() - 1
    }
}

impl Serialize for Tree {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut values = Values::default();
        let nodes = self
            .nodes
            .iter()
            .map(|n| NodeRecord::from_node(n, Some(&mut values)))
            .collect();
        TreeRecord {
            format: (self.format > 1).then_some(self.format),
            nodes,
            xattr_values: values.hex,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = TreeRecord::deserialize(d)?;
        let format = r.format.unwrap_or(1);
        if !(1..=TREE_FORMAT).contains(&format) {
            return Err(serde::de::Error::custom(format!(
                "tree format {format} is newer than this vouch reads ({TREE_FORMAT}): upgrade vouch"
            )));
        }
        let values = r
            .xattr_values
            .into_iter()
            .map(|h| hex::decode(h).map(Arc::<[u8]>::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| serde::de::Error::custom(format!("an xattr value is not hex: {e}")))?;
        let mut names = Names::default();
        let nodes = r
            .nodes
            .into_iter()
            .map(|n| n.into_node(Some(&values), &mut names))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(Tree { nodes, format })
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        NodeRecord::from_node(self, None).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        NodeRecord::deserialize(d)?
            .into_node(None, &mut Names::default())
            .map_err(serde::de::Error::custom)
    }
}

/// Owner and group names shared by the nodes of one tree.
#[derive(Default)]
struct Names(HashMap<String, Arc<str>>);

impl Names {
    fn get(&mut self, name: Option<String>) -> Option<Arc<str>> {
        let name = name?;
        Some(
            self.0
                .entry(name)
                .or_insert_with_key(|k| Arc::from(k.as_str()))
                .clone(),
        )
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    xattrs: Vec<XattrRecord>,
    #[serde(default, skip_serializing_if = "is_zero")]
    links: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    device: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    holes: Vec<Hole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    major: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minor: Option<u32>,
}

/// An extended attribute in JSON: the value is an index into the tree's `xattr_values`, or
/// inline as hex where a node travels alone (a drill's job).
#[derive(Serialize, Deserialize)]
struct XattrRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl NodeRecord {
    fn from_node(n: &Node, mut values: Option<&mut Values>) -> Self {
        let (name, name_hex) = super::split_bytes(&n.name);
        let (target, target_hex) = match &n.target {
            Some(t) => super::split_bytes(t),
            None => (None, None),
        };
        let extra = n.extra.as_deref();
        let xattrs = n
            .xattrs()
            .iter()
            .map(|x| {
                let (name, name_hex) = super::split_bytes(&x.name);
                let (value, value_hex) = match values.as_deref_mut() {
                    Some(v) => (Some(v.index(&x.value)), None),
                    None => (None, Some(hex::encode(&x.value))),
                };
                XattrRecord {
                    name,
                    name_hex,
                    value,
                    value_hex,
                }
            })
            .collect();
        let device_node = matches!(n.kind, NodeKind::CharDevice | NodeKind::BlockDevice);
        NodeRecord {
            name,
            name_hex,
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            user: n.user.as_deref().map(str::to_string),
            group: n.group.as_deref().map(str::to_string),
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
            inode: n.inode,
            size: n.size,
            content: n.content.clone(),
            hash: n.hash,
            subtree: n.subtree,
            target,
            target_hex,
            xattrs,
            links: extra.map_or(0, |e| e.links),
            device: extra.map_or(0, |e| e.device),
            holes: n.holes().to_vec(),
            major: device_node.then(|| extra.map_or(0, |e| e.major)),
            minor: device_node.then(|| extra.map_or(0, |e| e.minor)),
        }
    }

    fn into_node(self, values: Option<&[Arc<[u8]>]>, names: &mut Names) -> Result<Node, NodeError> {
        let r = self;
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
            NodeKind::CharDevice | NodeKind::BlockDevice
                if r.major.is_none() || r.minor.is_none() =>
            {
                return Err(NodeError::NoDevice);
            }
            _ => {}
        }
        let mut xattrs = Vec::with_capacity(r.xattrs.len());
        for x in r.xattrs {
            let xname = super::join_bytes(x.name, x.name_hex, "xattr name")?
                .filter(|n| !n.is_empty() && !n.contains(&0))
                .ok_or(NodeError::BadXattr)?;
            let value = match (x.value, x.value_hex, values) {
                (Some(i), None, Some(values)) => values.get(i).cloned(),
                (None, Some(h), _) => hex::decode(h).ok().map(Arc::from),
                _ => None,
            }
            .ok_or(NodeError::BadXattr)?;
            xattrs.push(Xattr {
                name: xname.into_boxed_slice(),
                value,
            });
        }
        if !xattrs.windows(2).all(|w| w[0].name < w[1].name) {
            return Err(NodeError::BadXattr);
        }
        // Holes in order, not overlapping, inside the file: a restore seeks over them. Touching
        // holes are read (a backup before they were merged could write them).
        let mut end = 0;
        for h in &r.holes {
            let hole_end = h.offset().checked_add(h.length());
            if r.kind != NodeKind::File
                || h.length() == 0
                || h.offset() < end
                || hole_end.is_none_or(|e| e > r.size)
            {
                return Err(NodeError::BadHoles);
            }
            end = h.end();
        }
        let mut node = Node {
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
            user: names.get(r.user),
            group: names.get(r.group),
            extra: Some(Box::new(Extra {
                xattrs,
                links: r.links,
                device: r.device,
                holes: r.holes,
                major: r.major.unwrap_or(0),
                minor: r.minor.unwrap_or(0),
            })),
        };
        node.tidy();
        Ok(node)
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
    #[error("a device node has no major and minor number")]
    NoDevice,
    #[error("an extended attribute of a node has no name or value")]
    BadXattr,
    #[error("a node's holes are out of order or outside the file")]
    BadHoles,
    #[error(transparent)]
    Bytes(#[from] super::BytesError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 3,
            size: 0,
            content: vec![],
            hash: None,
            subtree: None,
            target: None,
            user: None,
            group: None,
            extra: None,
        }
    }

    #[test]
    fn non_utf8_names_and_targets_round_trip_through_hex() {
        let mut node = node(&[b'a', 0xff, b'\n'], NodeKind::Symlink);
        node.target = Some(vec![0xfe, b'/', b'x']);
        let json = serde_json::to_string(&node).unwrap();
        assert!(json.contains("\"name_hex\":\"61ff0a\""), "{json}");
        assert_eq!(serde_json::from_str::<Node>(&json).unwrap(), node);
    }

    #[test]
    fn a_node_named_dot_dot_is_refused() {
        let json = r#"{"name":"..","type":"dir","mode":493,"uid":0,"gid":0,"mtime_ns":0,"ctime_ns":0,"inode":0,"subtree":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        assert!(serde_json::from_str::<Node>(json).is_err());
    }

    /// The test vector of docs/FORMAT.md §7.3: two files sharing one ACL, a hard link
    /// pair, a sparse file and a device, serialized exactly so.
    #[test]
    fn a_tree_with_metadata_is_the_documented_json() {
        let acl: Arc<[u8]> = Arc::from(&b"\x02\x00\x00\x00"[..]);
        let hash = FileHash::from_bytes([7; 32]);
        let mut a = node(b"a.docx", NodeKind::File);
        a.hash = Some(hash);
        a.user = Some("alice".into());
        a.group = Some("staff".into());
        a.extra_mut().xattrs = vec![
            Xattr {
                name: (*b"security.NTACL").into(),
                value: acl.clone(),
            },
            Xattr {
                name: (*b"user.DOSATTRIB").into(),
                value: Arc::from(&b"0x20"[..]),
            },
        ];
        a.extra_mut().links = 2;
        a.extra_mut().device = 2049;
        let mut b = a.clone();
        b.name = b"b.docx".to_vec();
        b.extra_mut().xattrs.truncate(1);
        let mut disk = node(b"disk.img", NodeKind::File);
        disk.hash = Some(hash);
        disk.size = 1 << 30;
        disk.extra_mut().holes = vec![Hole(0, 4096), Hole(8192, (1 << 30) - 8192)];
        let mut dev = node(b"null", NodeKind::CharDevice);
        dev.extra_mut().major = 1;
        dev.extra_mut().minor = 3;
        let tree = Tree {
            nodes: vec![a, b, disk, dev],
            format: TREE_FORMAT,
        };
        let json = serde_json::to_string(&tree).unwrap();
        let h = "0707070707070707070707070707070707070707070707070707070707070707";
        let common = r#""mode":420,"uid":1000,"gid":1000"#;
        let times = r#""mtime_ns":1,"ctime_ns":2,"inode":3"#;
        let expected = format!(
            concat!(
                r#"{{"format":2,"nodes":["#,
                r#"{{"name":"a.docx","type":"file",{c},"user":"alice","group":"staff",{t},"hash":"{h}","xattrs":[{{"name":"security.NTACL","value":0}},{{"name":"user.DOSATTRIB","value":1}}],"links":2,"device":2049}},"#,
                r#"{{"name":"b.docx","type":"file",{c},"user":"alice","group":"staff",{t},"hash":"{h}","xattrs":[{{"name":"security.NTACL","value":0}}],"links":2,"device":2049}},"#,
                r#"{{"name":"disk.img","type":"file",{c},{t},"size":1073741824,"hash":"{h}","holes":[[0,4096],[8192,1073733632]]}},"#,
                r#"{{"name":"null","type":"chardev",{c},{t},"major":1,"minor":3}}"#,
                r#"],"xattr_values":["02000000","30783230"]}}"#
            ),
            c = common,
            t = times,
            h = h
        );
        assert_eq!(json, expected);
        let back: Tree = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tree);
        // One copy of the shared ACL in memory.
        assert!(Arc::ptr_eq(
            &back.nodes[0].xattrs()[0].value,
            &back.nodes[1].xattrs()[0].value
        ));
        assert_eq!(back.nodes[0].link_group(), Some((2049, 3)));
        assert!(back.nodes[0].has_acl());
    }

    #[test]
    fn a_first_release_tree_reads_as_format_one() {
        let json = r#"{"nodes":[{"name":"a","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"ctime_ns":0,"inode":0,"hash":"0707070707070707070707070707070707070707070707070707070707070707"}]}"#;
        let tree: Tree = serde_json::from_str(json).unwrap();
        assert_eq!(tree.format, 1);
        assert_eq!(tree.nodes[0].extra, None);
        // Written back as it was: the first release's trees keep their ids.
        assert_eq!(serde_json::to_string(&tree).unwrap(), json);
    }

    #[test]
    fn holes_out_of_order_or_past_the_end_are_refused() {
        let base = r#""type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"ctime_ns":0,"inode":0,"size":100,"hash":"0707070707070707070707070707070707070707070707070707070707070707""#;
        for holes in [
            "[[50,10],[10,10]]",
            "[[90,20]]",
            "[[0,0]]",
            "[[0,10],[5,5]]",
        ] {
            let json = format!(r#"{{"name":"a",{base},"holes":{holes}}}"#);
            assert!(serde_json::from_str::<Node>(&json).is_err(), "{holes}");
        }
        let json = format!(r#"{{"name":"a",{base},"holes":[[0,10],[20,80]]}}"#);
        assert_eq!(
            serde_json::from_str::<Node>(&json).unwrap().holes().len(),
            2
        );
    }

    #[test]
    fn a_newer_tree_format_is_refused_with_what_to_do() {
        let err = serde_json::from_str::<Tree>(r#"{"format":3,"nodes":[]}"#).unwrap_err();
        assert!(err.to_string().contains("upgrade vouch"), "{err}");
    }
}
