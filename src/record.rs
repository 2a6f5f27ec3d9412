//! Records: the replicated metadata of one key, content ids, versions, record signatures
//! (format 3) and causality: which write saw which (dotted version vectors), and the order
//! that picks the current version among writes that did not see each other.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Fixed size of a content chunk; the last chunk of a file may be shorter.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Longest key accepted, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest file a record may describe (1 TiB): anything larger is rejected as impossible.
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// Longest author (peer id bytes) accepted in a record.
pub const MAX_AUTHOR_LEN: usize = 64;
/// Domain prefix of the content id hash, so that a content id never equals a chunk hash.
const CONTENT_ID_DOMAIN: &[u8] = b"dfs/content/1\0";
/// Domain prefix of what a record's author signs, so a record signature is never valid as
/// anything else signed by the same key (a grant, a libp2p message).
pub const RECORD_SIGN_DOMAIN: &[u8] = b"dfs/record/3\0";
/// Most entries in a record's causal context (`seen`). A write that saw more authors keeps the
/// entries of the versions it replaces first: a dropped entry can only make a later version of
/// that author look concurrent (a conflict kept), never lose one.
pub const MAX_SEEN: usize = 64;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a key or record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRecord {
    #[error("invalid key: the key is empty")]
    EmptyKey,
    #[error("invalid key: {0} bytes, the limit is {MAX_KEY_LEN}")]
    KeyTooLong(usize),
    #[error("invalid key: it contains the control character U+{0:04X}, which a terminal would interpret")]
    KeyHasControl(u32),
    #[error("invalid key: {0} (keys are names like `photos/2024/cat.jpg`)")]
    KeyShape(&'static str),
    #[error("invalid record: size {0} is larger than the limit of {MAX_FILE_SIZE} bytes")]
    TooLarge(u64),
    #[error("invalid record: a tombstone must have size 0")]
    TombstoneWithSize,
    #[error("invalid record: author is not a valid peer id")]
    BadAuthor,
    #[error("invalid record: its clock is more than 10 minutes ahead of the network's time")]
    FromTheFuture,
    #[error("invalid record: its causal context has more than {MAX_SEEN} entries")]
    TooManySeen,
    #[error("invalid record: its causal context is not sorted by author, names an author twice or the record's own author, or has a zero sequence number")]
    BadSeen,
    #[error("invalid record: its signature does not verify against its author's key")]
    BadSignature,
}

/// Checks a key against the grammar of the spec (docs/PROTOCOL.md, "Keys"): UTF-8 (guaranteed
/// by `&str`), 1 to [`MAX_KEY_LEN`] bytes, no control or bidirectional-formatting character, and
/// `/`-separated segments none of which is empty, `.` or `..` (so no leading, trailing or double
/// slash). Keys are names, never file paths, but every key is one that `get -r` can write back
/// under a directory and that prints as itself on a terminal.
pub fn validate_key(key: &str) -> Result<(), InvalidRecord> {
    if key.is_empty() {
        return Err(InvalidRecord::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(InvalidRecord::KeyTooLong(key.len()));
    }
    if let Some(c) = key.chars().find(|c| is_unprintable(*c)) {
        return Err(InvalidRecord::KeyHasControl(c as u32));
    }
    if key.starts_with('/') {
        return Err(InvalidRecord::KeyShape("it starts with `/`"));
    }
    if key.ends_with('/') {
        return Err(InvalidRecord::KeyShape("it ends with `/`"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(InvalidRecord::KeyShape("it has an empty segment (`//`)")),
            "." | ".." => {
                return Err(InvalidRecord::KeyShape("it has a `.` or `..` segment"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Characters a key may not hold, and that every place printing peer-supplied text escapes:
/// the C0 and C1 controls and DEL (a terminal acts on them: `ESC [2J` clears the screen), the
/// line and paragraph separators, and the bidirectional formatting characters (they reorder
/// what is shown, so a key could display as another).
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` as a terminal may show it: every [`is_unprintable`] character is written as an
/// escape (`\n`, `\t`, `\u{1b}`), and backslashes are doubled only when something was
/// escaped, so ordinary names print unchanged.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_unprintable(c) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A BLAKE3 hash: of one chunk's bytes, or (as a [`ContentId`]) of a whole file's chunk list.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash of a chunk's bytes.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash(out))
    }

    pub fn from_slice(b: &[u8]) -> Option<Hash> {
        Some(Hash(b.try_into().ok()?))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        Hash::from_slice(&b).ok_or_else(|| serde::de::Error::invalid_length(b.len(), &"32 bytes"))
    }
}

/// The content id of a file: `BLAKE3("dfs/content/1\0" || size as u64 big-endian || chunk
/// hashes in order)`. It commits to the size and to every chunk, so a chunk list received from a
/// peer is checked against it before a single chunk is fetched.
pub type ContentId = Hash;

/// Number of chunks a file of `size` bytes has.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE as u64)
}

/// Length of chunk `index` of a file of `size` bytes.
pub fn chunk_len(size: u64, index: u64) -> usize {
    let start = index * CHUNK_SIZE as u64;
    (size.saturating_sub(start)).min(CHUNK_SIZE as u64) as usize
}

/// Derives the content id from the file size and its chunk hashes.
pub fn content_id(size: u64, chunks: &[Hash]) -> ContentId {
    let mut h = blake3::Hasher::new();
    h.update(CONTENT_ID_DOMAIN);
    h.update(&size.to_be_bytes());
    for c in chunks {
        h.update(&c.0);
    }
    Hash(*h.finalize().as_bytes())
}

/// True when `chunks` is a chunk list that a file of `size` bytes with content id `cid` can have.
pub fn chunk_list_matches(cid: &ContentId, size: u64, chunks: &[Hash]) -> bool {
    chunks.len() as u64 == chunk_count(size) && content_id(size, chunks) == *cid
}

/// The replicated metadata of one key. `cid == None` is a tombstone (a delete).
///
/// Format 3: every record is signed by its author's ed25519 key ([`Record::sign`],
/// [`Record::verify`]) over [`RECORD_SIGN_DOMAIN`] and the canonical CBOR of every field but
/// `sig`. `seq` numbers the objects an author signs (records and grants), 1, 2, 3, ... without
/// gaps, so that a revocation can say which of them keep counting (see `crate::trust`).
///
/// Causality: `(author, seq)` is the record's dot; `seen` is what its writer had seen of the
/// key when it wrote: for each other author, the highest `seq` of that author's versions of
/// the key (a dotted version vector, as in Riak). A record replaces every version it saw
/// ([`Record::saw`]), whatever the clocks. Versions that did not see each other are concurrent:
/// all are kept (conflicts) and one is current by [`Record::cmp_current`]. `time` is a hybrid
/// logical clock value (milliseconds since the epoch in the upper 48 bits, a logical counter in
/// the lower 16), used for that order and for history, never for causality.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub cid: Option<ContentId>,
    pub size: u64,
    pub time: u64,
    #[serde(with = "serde_bytes")]
    pub author: Vec<u8>,
    pub seq: u64,
    pub seen: Vec<Dot>,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

/// One entry of a causal context: an author (peer id bytes) and the highest sequence number of
/// its versions of the key that were seen. CBOR: a 2-element array `[bytes, uint]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dot(#[serde(with = "serde_bytes")] pub Vec<u8>, pub u64);

/// The id of one version of a key: the BLAKE3 hash of what its author signed
/// ([`RECORD_SIGN_DOMAIN`] and the record's canonical fields).
pub type VersionId = Hash;

/// The fields a record's signature covers, in their canonical order.
#[derive(Serialize)]
struct Signed<'a> {
    key: &'a str,
    cid: &'a Option<ContentId>,
    size: u64,
    time: u64,
    #[serde(with = "serde_bytes")]
    author: &'a [u8],
    seq: u64,
    seen: &'a [Dot],
}

/// The ed25519 public key inside an ed25519 peer id (an identity multihash), if it is one.
pub fn author_key(author: &[u8]) -> Option<libp2p::identity::PublicKey> {
    let peer = libp2p::PeerId::from_bytes(author).ok()?;
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    key.clone().try_into_ed25519().ok()?;
    Some(key)
}

impl Record {
    pub fn is_tombstone(&self) -> bool {
        self.cid.is_none()
    }

    /// True when this record's writer had seen `other` (a version of the same key) when it
    /// wrote: `other`'s dot is within this record's causal context. Then this record replaces
    /// it, whatever their clocks say.
    pub fn saw(&self, other: &Record) -> bool {
        if self.author == other.author {
            // An author's versions of a key are written one after the other on its node.
            return self.seq > other.seq;
        }
        self.seen_of(&other.author) >= other.seq
    }

    /// True when this record replaces `other` (a version of the same key): it saw `other` and
    /// `other` did not see it. Two versions that each claim to have seen the other cannot both
    /// be honest (a writer sees only what was written before it writes): a context that names
    /// versions written after its record (a `seq` an author had not reached yet) is a lie, and
    /// it makes neither version replace the other: both stay heads, a conflict, and no context
    /// can make later honest writes invisible.
    pub fn replaces(&self, other: &Record) -> bool {
        self.saw(other) && !other.saw(self)
    }

    /// The highest `seq` of `author` in this record's causal context (its own dot included).
    pub fn seen_of(&self, author: &[u8]) -> u64 {
        if self.author == author {
            return self.seq;
        }
        match self.seen.binary_search_by(|d| d.0.as_slice().cmp(author)) {
            Ok(i) => self.seen[i].1,
            Err(_) => 0,
        }
    }

    /// The order that picks the current version among concurrent ones (neither saw the
    /// other): a write before a delete (a concurrent delete never hides a write), then the
    /// later clock, then the author, then (only for records a faulty author signed twice)
    /// content id and size. Total, so every node picks the same current version.
    pub fn cmp_current(&self, other: &Record) -> Ordering {
        (
            self.cid.is_some(),
            self.time,
            &self.author,
            &self.cid,
            self.size,
        )
            .cmp(&(
                other.cid.is_some(),
                other.time,
                &other.author,
                &other.cid,
                other.size,
            ))
    }

    /// The bytes the author signs: [`RECORD_SIGN_DOMAIN`] followed by the canonical CBOR map of
    /// every field but `sig`, in the order of the struct.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = RECORD_SIGN_DOMAIN.to_vec();
        ciborium::into_writer(
            &Signed {
                key: &self.key,
                cid: &self.cid,
                size: self.size,
                time: self.time,
                author: &self.author,
                seq: self.seq,
                seen: &self.seen,
            },
            &mut out,
        )
        .expect("encoding to a Vec cannot fail");
        out
    }

    /// This version's id: BLAKE3 of [`Record::signed_bytes`].
    pub fn version(&self) -> VersionId {
        Hash(*blake3::hash(&self.signed_bytes()).as_bytes())
    }

    /// Sets `author` to `key`'s peer id and `sig` to its signature of the record.
    pub fn sign(&mut self, key: &libp2p::identity::Keypair) {
        self.author = key.public().to_peer_id().to_bytes();
        self.sig = key
            .sign(&self.signed_bytes())
            .expect("ed25519 signing cannot fail");
    }

    /// Checks the signature against the author's ed25519 key.
    pub fn verify(&self) -> Result<(), InvalidRecord> {
        let key = author_key(&self.author).ok_or(InvalidRecord::BadAuthor)?;
        if self.sig.len() != SIGNATURE_LEN || !key.verify(&self.signed_bytes(), &self.sig) {
            return Err(InvalidRecord::BadSignature);
        }
        Ok(())
    }

    /// The author as a peer id, if it is one.
    pub fn author_peer(&self) -> Option<libp2p::PeerId> {
        libp2p::PeerId::from_bytes(&self.author).ok()
    }

    /// [`Record::check`] with the author's key already decoded (once for many records of one
    /// author): `key` must be [`author_key`] of `self.author`.
    pub fn check_with(&self, key: &libp2p::identity::PublicKey) -> Result<(), InvalidRecord> {
        self.validate()?;
        if self.sig.len() != SIGNATURE_LEN || !key.verify(&self.signed_bytes(), &self.sig) {
            return Err(InvalidRecord::BadSignature);
        }
        Ok(())
    }

    /// Checks everything a record from the network or disk must satisfy by itself. (Whether
    /// its clock is too far ahead depends on the network's time: the store judges that.)
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        validate_key(&self.key)?;
        if self.size > MAX_FILE_SIZE {
            return Err(InvalidRecord::TooLarge(self.size));
        }
        if self.cid.is_none() && self.size != 0 {
            return Err(InvalidRecord::TombstoneWithSize);
        }
        if self.author.len() > MAX_AUTHOR_LEN || self.author_peer().is_none() {
            return Err(InvalidRecord::BadAuthor);
        }
        if self.seen.len() > MAX_SEEN {
            return Err(InvalidRecord::TooManySeen);
        }
        let sorted = self.seen.windows(2).all(|w| w[0].0 < w[1].0);
        let entries_ok = self.seen.iter().all(|Dot(author, seq)| {
            *seq > 0 && *author != self.author && author.len() <= MAX_AUTHOR_LEN
        });
        if !sorted || !entries_ok {
            return Err(InvalidRecord::BadSeen);
        }
        Ok(())
    }

    /// [`Record::validate`], then [`Record::verify`]: what every record from the network passes.
    pub fn check(&self) -> Result<(), InvalidRecord> {
        self.validate()?;
        self.verify()
    }

    /// A short digest of the whole record, used by anti-entropy to compare record sets: the
    /// first 8 bytes of its [`version`](Record::version), big-endian.
    pub fn fingerprint(&self) -> u64 {
        u64::from_be_bytes(self.version().0[..8].try_into().expect("8 bytes"))
    }
}

/// A 64-bit hash of a key; anti-entropy buckets records by it.
pub fn key_hash(key: &str) -> u64 {
    let h = blake3::hash(key.as_bytes());
    u64::from_be_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn wall_ms() -> u64 {
    crate::clock::system_ms()
}

pub use crate::clock::physical_ms;

/// The causal context of a new write that replaces `heads` (the key's current and conflicting
/// versions): the join of their contexts and dots, without `author` (the writer's own dot
/// covers its earlier versions). Beyond [`MAX_SEEN`] entries, the dots of `heads` are kept
/// first, then the highest numbers.
pub fn context_after(heads: &[Record], author: &[u8]) -> Vec<Dot> {
    let mut all: std::collections::BTreeMap<&[u8], u64> = std::collections::BTreeMap::new();
    for h in heads {
        let dots = h.seen.iter().map(|d| (d.0.as_slice(), d.1));
        for (a, s) in dots.chain([(h.author.as_slice(), h.seq)]) {
            let e = all.entry(a).or_insert(0);
            *e = (*e).max(s);
        }
    }
    all.remove(author);
    if all.len() > MAX_SEEN {
        let mut ranked: Vec<(&[u8], u64)> = all.into_iter().collect();
        let is_head = |a: &[u8]| heads.iter().any(|h| h.author == a);
        ranked.sort_by_key(|(a, s)| std::cmp::Reverse((is_head(a), *s)));
        ranked.truncate(MAX_SEEN);
        all = ranked.into_iter().collect();
    }
    all.into_iter().map(|(a, s)| Dot(a.to_vec(), s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, time: u64, author: u8, cid: Option<u8>) -> Record {
        Record {
            key: key.into(),
            cid: cid.map(|c| Hash([c; 32])),
            size: if cid.is_some() { 1 } else { 0 },
            time,
            author: vec![author],
            seq: 1,
            seen: Vec::new(),
            sig: Vec::new(),
        }
    }

    #[test]
    fn signatures_cover_every_field_and_name_the_author() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut r = rec("k", wall_ms() << 16, 0, Some(3));
        r.sign(&key);
        assert_eq!(r.author_peer(), Some(key.public().to_peer_id()));
        assert_eq!(r.check(), Ok(()));
        for tampered in [
            Record {
                size: 2,
                ..r.clone()
            },
            Record {
                seq: 2,
                ..r.clone()
            },
            Record {
                key: "j".into(),
                ..r.clone()
            },
            Record {
                seen: vec![Dot(vec![1], 1)],
                ..r.clone()
            },
            Record {
                time: r.time + 1,
                ..r.clone()
            },
        ] {
            assert_eq!(tampered.verify(), Err(InvalidRecord::BadSignature));
        }
        let other = libp2p::identity::Keypair::generate_ed25519();
        let impostor = Record {
            author: other.public().to_peer_id().to_bytes(),
            ..r.clone()
        };
        assert_eq!(impostor.verify(), Err(InvalidRecord::BadSignature));
        assert_ne!(
            r.version(),
            Record {
                seq: 2,
                ..r.clone()
            }
            .version()
        );
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(validate_key(""), Err(InvalidRecord::EmptyKey));
        assert_eq!(validate_key("a\0b"), Err(InvalidRecord::KeyHasControl(0)));
        assert!(validate_key(&"x".repeat(MAX_KEY_LEN)).is_ok());
        assert_eq!(
            validate_key(&"x".repeat(MAX_KEY_LEN + 1)),
            Err(InvalidRecord::KeyTooLong(MAX_KEY_LEN + 1))
        );
        for good in [
            "a",
            "photos/2024/cat.jpg",
            "a.b",
            "..a",
            "a..",
            ".hidden/x",
            "dir/.env",
            "é/ü ✓",
            "a\\b",
        ] {
            assert_eq!(validate_key(good), Ok(()), "{good:?}");
        }
        for bad in [
            "../x", "a/../b", "/abs", "a/", "a//b", ".", "..", "a/.", "./a", "/",
        ] {
            assert!(
                matches!(validate_key(bad), Err(InvalidRecord::KeyShape(_))),
                "{bad:?}"
            );
        }
        for (bad, c) in [
            ("\u{1b}[2J", 0x1b),
            ("a\nb", 10),
            ("a\tb", 9),
            ("x\u{7f}", 0x7f),
            ("x\u{9b}", 0x9b),
            ("x\u{202e}y", 0x202e),
            ("x\u{2028}", 0x2028),
        ] {
            assert_eq!(
                validate_key(bad),
                Err(InvalidRecord::KeyHasControl(c)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn printable_text_escapes_only_what_a_terminal_would_interpret() {
        assert!(matches!(
            printable("photos/a\\b.jpg"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("\u{1b}[2J\u{1b}[31mEVIL"),
            "\\u{1b}[2J\\u{1b}[31mEVIL"
        );
        assert_eq!(printable("a\nb\\c"), "a\\nb\\\\c");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
    }

    #[test]
    fn the_current_order_is_writes_first_then_clock_then_author_then_content() {
        let newer = |a: Record, b: Record| a.cmp_current(&b) == Ordering::Greater;
        assert!(newer(rec("k", 2, 0, Some(1)), rec("k", 1, 9, Some(1))));
        assert!(newer(rec("k", 1, 2, Some(1)), rec("k", 1, 1, Some(1))));
        assert!(newer(rec("k", 1, 1, Some(2)), rec("k", 1, 1, Some(1))));
        // A concurrent delete never hides a write, however late its clock.
        assert!(newer(rec("k", 1, 1, Some(1)), rec("k", 9, 2, None)));
    }

    #[test]
    fn a_record_saw_what_its_context_covers() {
        let a1 = rec("k", 1, 1, Some(1));
        let a2 = Record {
            seq: 5,
            ..rec("k", 2, 1, Some(2))
        };
        let b = Record {
            seen: vec![Dot(vec![1], 1)],
            ..rec("k", 1, 2, Some(3))
        };
        assert!(b.saw(&a1) && !b.saw(&a2) && !a2.saw(&b));
        // An author's later version replaces its earlier one, whatever the clocks.
        assert!(a2.saw(&a1) && !a1.saw(&a2));
        // A write after both carries both dots.
        let ctx = context_after(&[a2.clone(), b.clone()], &[3]);
        assert_eq!(ctx, vec![Dot(vec![1], 5), Dot(vec![2], 1)]);
        let c = Record {
            seen: ctx,
            ..rec("k", 0, 3, Some(4))
        };
        assert!(c.saw(&a1) && c.saw(&a2) && c.saw(&b));
        assert_eq!(
            c.validate(),
            Err(InvalidRecord::BadAuthor),
            "authors here are not peer ids"
        );
    }

    #[test]
    fn causal_contexts_are_validated() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let other = libp2p::PeerId::random().to_bytes();
        let mut r = rec("k", 1, 0, Some(1));
        r.sign(&key);
        let with = |seen: Vec<Dot>| Record { seen, ..r.clone() }.validate();
        assert_eq!(with(vec![Dot(other.clone(), 1)]), Ok(()));
        assert_eq!(
            with(vec![Dot(other.clone(), 0)]),
            Err(InvalidRecord::BadSeen)
        );
        assert_eq!(
            with(vec![Dot(r.author.clone(), 1)]),
            Err(InvalidRecord::BadSeen)
        );
        assert_eq!(
            with(vec![Dot(other.clone(), 1), Dot(other.clone(), 2)]),
            Err(InvalidRecord::BadSeen)
        );
        let many = (0..=MAX_SEEN)
            .map(|i| Dot(vec![i as u8 + 1; 8], 1))
            .collect();
        assert_eq!(with(many), Err(InvalidRecord::TooManySeen));
    }

    #[test]
    fn content_id_commits_to_size_and_chunks() {
        let chunks = [Hash::of(b"a"), Hash::of(b"b")];
        let cid = content_id(CHUNK_SIZE as u64 + 1, &chunks);
        assert!(chunk_list_matches(&cid, CHUNK_SIZE as u64 + 1, &chunks));
        assert!(!chunk_list_matches(&cid, CHUNK_SIZE as u64 + 2, &chunks));
        assert!(!chunk_list_matches(
            &cid,
            CHUNK_SIZE as u64 + 1,
            &chunks[..1]
        ));
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(CHUNK_SIZE as u64), 1);
        assert_eq!(chunk_len(CHUNK_SIZE as u64 + 1, 1), 1);
    }
}
