//! Actor addresses: which node (and which life of that node) and which actor.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identity of a node in the cluster, e.g. `node-a`.
///
/// Restricted to `[A-Za-z0-9._-]` so it is safe in paths, URLs, file names and
/// certificate SANs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

/// Why a node id or actor path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The node id was empty.
    #[error("node id is empty")]
    EmptyNode,
    /// A character outside `[A-Za-z0-9._-]` appeared.
    #[error(
        "invalid character {ch:?} in {what} {value:?} (allowed: letters, digits, '.', '_', '-')"
    )]
    InvalidChar {
        /// "node id" or "path segment".
        what: &'static str,
        /// The offending value.
        value: String,
        /// The first bad character.
        ch: char,
    },
    /// Two slashes in a row, or a leading/trailing slash inside the name.
    #[error("empty segment in actor path {0:?}")]
    EmptySegment(String),
    /// The incarnation after `@` was not a number.
    #[error("bad incarnation in {0:?}: expected node@<number>")]
    BadIncarnation(String),
}

fn check_segment(what: &'static str, s: &str) -> Result<(), PathError> {
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(PathError::InvalidChar {
            what,
            value: s.to_string(),
            ch,
        });
    }
    Ok(())
}

impl NodeId {
    /// Validates and wraps a node id.
    pub fn new(id: impl Into<String>) -> Result<Self, PathError> {
        let id = id.into();
        if id.is_empty() {
            return Err(PathError::EmptyNode);
        }
        check_segment("node id", &id)?;
        Ok(Self(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> Self {
        n.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Location-transparent address of an actor: `node-a/vector/docs/shard-3`.
///
/// The incarnation distinguishes lives of the same node id: a node that
/// restarts gets a new one, so messages meant for its previous life are
/// refused instead of being delivered to a fresh actor by accident.
/// Incarnation `0` means "whichever life is current" and is what paths
/// parsed from user input (URLs, CLI) carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActorPath {
    /// Node that hosts the actor.
    pub node: NodeId,
    /// Life of that node (0 = any).
    pub incarnation: u64,
    /// Hierarchical name below the node, segments joined by `/`; empty for the root supervisor.
    pub name: String,
}

impl ActorPath {
    /// The root supervisor of a node.
    pub fn root(node: NodeId, incarnation: u64) -> Self {
        Self {
            node,
            incarnation,
            name: String::new(),
        }
    }

    /// A path under `node` with the given hierarchical name (validated).
    pub fn new(node: NodeId, incarnation: u64, name: &str) -> Result<Self, PathError> {
        let name = name.trim_matches('/');
        if !name.is_empty() {
            for seg in name.split('/') {
                if seg.is_empty() {
                    return Err(PathError::EmptySegment(name.to_string()));
                }
                check_segment("path segment", seg)?;
            }
        }
        Ok(Self {
            node,
            incarnation,
            name: name.to_string(),
        })
    }

    /// The path of a child named `segment` (validated).
    pub fn child(&self, segment: &str) -> Result<Self, PathError> {
        if segment.is_empty() || segment.contains('/') {
            return Err(PathError::EmptySegment(segment.to_string()));
        }
        check_segment("path segment", segment)?;
        let name = if self.name.is_empty() {
            segment.to_string()
        } else {
            format!("{}/{}", self.name, segment)
        };
        Ok(Self {
            node: self.node.clone(),
            incarnation: self.incarnation,
            name,
        })
    }

    /// The parent path, or `None` for a node's root.
    pub fn parent(&self) -> Option<Self> {
        if self.name.is_empty() {
            return None;
        }
        let name = match self.name.rfind('/') {
            Some(i) => self.name[..i].to_string(),
            None => String::new(),
        };
        Some(Self {
            node: self.node.clone(),
            incarnation: self.incarnation,
            name,
        })
    }

    /// Last segment of the name (empty for the root).
    pub fn leaf(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or("")
    }

    /// The same path without an incarnation (matches any life of the node).
    pub fn any_incarnation(&self) -> Self {
        Self {
            incarnation: 0,
            ..self.clone()
        }
    }
}

impl fmt::Display for ActorPath {
    /// `node/name`; the incarnation is shown only with `{:#}` (`node@7/name`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() && self.incarnation != 0 {
            write!(f, "{}@{}", self.node, self.incarnation)?;
        } else {
            write!(f, "{}", self.node)?;
        }
        if !self.name.is_empty() {
            write!(f, "/{}", self.name)?;
        }
        Ok(())
    }
}

impl FromStr for ActorPath {
    type Err = PathError;

    /// Parses `node/a/b` or `node@incarnation/a/b`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim_matches('/');
        let (head, rest) = s.split_once('/').unwrap_or((s, ""));
        let (node, incarnation) = match head.split_once('@') {
            Some((n, inc)) => (
                n,
                inc.parse::<u64>()
                    .map_err(|_| PathError::BadIncarnation(s.to_string()))?,
            ),
            None => (head, 0),
        };
        Self::new(NodeId::new(node)?, incarnation, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).expect("valid node id")
    }

    #[test]
    fn display_and_parse_round_trip() {
        let p = ActorPath::new(node("node-a"), 7, "vector/docs/shard-3").expect("valid");
        assert_eq!(p.to_string(), "node-a/vector/docs/shard-3");
        assert_eq!(format!("{p:#}"), "node-a@7/vector/docs/shard-3");
        let back: ActorPath = format!("{p:#}").parse().expect("parse");
        assert_eq!(back, p);
        let any: ActorPath = "node-a/vector/docs/shard-3".parse().expect("parse");
        assert_eq!(any, p.any_incarnation());
    }

    #[test]
    fn parent_child_leaf() {
        let root = ActorPath::root(node("n1"), 1);
        let v = root.child("vector").expect("child");
        let s = v.child("shard-0").expect("child");
        assert_eq!(s.leaf(), "shard-0");
        assert_eq!(s.parent(), Some(v.clone()));
        assert_eq!(v.parent(), Some(root.clone()));
        assert_eq!(root.parent(), None);
        assert_eq!(root.to_string(), "n1");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!("n1/a//b".parse::<ActorPath>().is_err());
        assert!("n1@x/a".parse::<ActorPath>().is_err());
        assert!(ActorPath::root(node("n"), 0).child("a/b").is_err());
        let json = serde_json::from_str::<NodeId>("\"bad id\"");
        assert!(json.is_err());
    }
}
