//! The path index: every scalar of a document's winning revision, by path and value.
//!
//! `{"id":"ID","locations":[{"country":"France"}]}` yields the entries `$/id/ID` and
//! `$/locations/0/country/france`. An entry's key (in the `index` column family) is
//! `<barrel id><path segments><value><doc id>`, encoded so that bytewise order is the order a
//! user expects:
//!
//! - object keys (tag `0x01`, escaped UTF-8, terminated) sort before array indexes (tag `0x02`,
//!   32-bit big-endian), each in its natural order;
//! - values sort by type — `null` < `false` < `true` < numbers < strings — then numerically
//!   (integers and floats together, exactly) or by the UTF-8 bytes of the string;
//! - strings are indexed lowercased (Unicode lowercase), as in the talk's
//!   `$/locations/0/country/france`; the document keeps its original value;
//! - the doc id comes last, so entries with the same path and value list in id order.
//!
//! Limits: strings longer than [`MAX_INDEXED_STRING`] bytes and paths whose encoding exceeds
//! [`MAX_INDEXED_PATH`] bytes are not indexed; a document with more than [`MAX_ENTRIES`] entries
//! is refused. Empty objects and arrays have no scalar and no entry. `_attachments` is not
//! indexed.

use crate::doc::Body;
use crate::error::DocError;
use serde_json::{Number, Value};

/// Longest string value indexed, in bytes (longer ones are stored but not indexed).
pub const MAX_INDEXED_STRING: usize = 256;
/// Longest encoded path indexed, in bytes.
pub const MAX_INDEXED_PATH: usize = 1024;
/// Most index entries one document may have.
pub const MAX_ENTRIES: usize = 10_000;

const SEG_KEY: u8 = 0x01;
const SEG_INDEX: u8 = 0x02;
const VAL_NULL: u8 = 0x10;
const VAL_FALSE: u8 = 0x11;
const VAL_TRUE: u8 = 0x12;
const VAL_NUMBER: u8 = 0x13;
const VAL_STRING: u8 = 0x14;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// An object member.
    Key(String),
    /// An array element.
    Index(u32),
}

/// A step of a query path: a segment, or any array index (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern {
    /// Exactly this segment.
    Seg(Segment),
    /// Any array index.
    AnyIndex,
}

/// Appends `s` escaped (NUL as `00 FF`) and terminated (`00 01`), which keeps bytewise order.
fn put_escaped(out: &mut Vec<u8>, s: &str) {
    // Copied in runs between NULs (most strings have none): a byte at a time was a tenth of
    // the work of computing a document's entries.
    let mut rest = s.as_bytes();
    out.reserve(rest.len() + 2);
    while let Some(i) = memchr::memchr(0, rest) {
        out.extend_from_slice(&rest[..=i]);
        out.push(0xFF);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Reads an escaped string at `*pos`.
fn get_escaped(buf: &[u8], pos: &mut usize) -> Option<String> {
    let mut out = Vec::new();
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if b == 0 {
            let next = *buf.get(*pos)?;
            *pos += 1;
            match next {
                0x01 => return String::from_utf8(out).ok(),
                0xFF => out.push(0),
                _ => return None,
            }
        } else {
            out.push(b);
        }
    }
}

/// Encodes one segment.
pub fn encode_segment(out: &mut Vec<u8>, seg: &Segment) {
    match seg {
        Segment::Key(k) => put_key_segment(out, k),
        Segment::Index(i) => put_index_segment(out, *i),
    }
}

/// Encodes an object member's segment (what [`encode_segment`] does for a `Segment::Key`,
/// without one).
fn put_key_segment(out: &mut Vec<u8>, k: &str) {
    out.push(SEG_KEY);
    put_escaped(out, k);
}

/// Encodes an array element's segment.
fn put_index_segment(out: &mut Vec<u8>, i: u32) {
    out.push(SEG_INDEX);
    out.extend_from_slice(&i.to_be_bytes());
}

fn sortable_f64(f: f64) -> [u8; 8] {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let bits = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    bits.to_be_bytes()
}

/// Encodes a scalar value as indexed; `None` for arrays, objects and over-long strings.
pub fn encode_value(v: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    put_value(&mut out, v).then_some(out)
}

/// A scalar as the index encodes it: from a [`Value`], or straight from JSON being read.
enum Scalar<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(&'a str),
}

impl Scalar<'_> {
    /// `None` for arrays and objects.
    fn of(v: &Value) -> Option<Scalar<'_>> {
        Some(match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => Scalar::Number(n.clone()),
            Value::String(s) => Scalar::Str(s),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    /// About the bytes the encoding takes, to size an entry once.
    fn len_hint(&self) -> usize {
        match self {
            Scalar::Str(s) => s.len() + 4,
            _ => 12,
        }
    }
}

/// Appends the encoding of a scalar value to `out`; `false` (and `out` unchanged) for arrays,
/// objects and over-long strings.
fn put_value(out: &mut Vec<u8>, v: &Value) -> bool {
    Scalar::of(v).is_some_and(|s| put_scalar(out, &s))
}

/// [`put_value`] of a scalar.
fn put_scalar(out: &mut Vec<u8>, v: &Scalar<'_>) -> bool {
    match v {
        Scalar::Null => out.push(VAL_NULL),
        Scalar::Bool(false) => out.push(VAL_FALSE),
        Scalar::Bool(true) => out.push(VAL_TRUE),
        Scalar::Number(n) => {
            out.push(VAL_NUMBER);
            encode_number(out, n);
        }
        Scalar::Str(s) => {
            if s.len() > MAX_INDEXED_STRING {
                return false;
            }
            out.push(VAL_STRING);
            if s.is_ascii() {
                // `normalize` without the copy: ASCII lowercases byte by byte.
                let from = out.len();
                put_escaped(out, s);
                out[from..].make_ascii_lowercase();
            } else {
                put_escaped(out, &normalize(s));
            }
        }
    }
    true
}

/// How string values are matched: Unicode lowercase.
pub fn normalize(s: &str) -> String {
    s.to_lowercase()
}

/// 2^127: an indexed integral f64 below it decodes as the integer it equals (with its distance).
const I128_LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// Numbers sort by their f64 value, ties (large integers that round to the same f64) broken by
/// how far the exact integer is from that f64. Integral floats are indexed as the integer they
/// equal, so `1` and `1.0` are the same indexed value.
///
/// The encoding is the sortable f64 and then [`NUM_EXACT`] when the number is that f64 exactly
/// (every float, and every integer of at most 53 bits), or, for an integer that rounds, the
/// marker [`NUM_BELOW`] or [`NUM_ABOVE`] and the 16-bit distance to the f64 (an i64 or u64 is
/// at most 2^11 away from the f64 nearest to it). Ten bytes for most numbers: the index takes
/// one entry per scalar, and a fixed 16-byte integer after every f64 made numbers the longest
/// entries after strings.
fn encode_number(out: &mut Vec<u8>, n: &Number) {
    let exact: Option<i128> = if let Some(i) = n.as_i64() {
        Some(i128::from(i))
    } else {
        n.as_u64().map(i128::from)
    };
    let Some(exact) = exact else {
        // A float: exactly the f64 it is (integral ones included, whatever their size).
        out.extend_from_slice(&sortable_f64(n.as_f64().unwrap_or(0.0)));
        out.push(NUM_EXACT);
        return;
    };
    let approx = exact as f64;
    out.extend_from_slice(&sortable_f64(approx));
    // `approx` is within 2^64 + 2^11 of zero, so this conversion is exact.
    let distance = exact - approx as i128;
    match distance.cmp(&0) {
        std::cmp::Ordering::Equal => out.push(NUM_EXACT),
        std::cmp::Ordering::Less => out.push(NUM_BELOW),
        std::cmp::Ordering::Greater => out.push(NUM_ABOVE),
    }
    if distance != 0 {
        // Two's complement with the sign bit flipped sorts like the signed value.
        let d = distance.clamp(i128::from(i16::MIN), i128::from(i16::MAX)) as i16;
        out.extend_from_slice(&((d as u16) ^ 0x8000).to_be_bytes());
    }
}

/// A number that is its f64 exactly.
const NUM_EXACT: u8 = 0x80;
/// An integer below the f64 it rounds to; its distance follows.
const NUM_BELOW: u8 = 0x7F;
/// An integer above the f64 it rounds to; its distance follows.
const NUM_ABOVE: u8 = 0x81;

/// Decodes a value encoded by [`encode_value`] at `*pos` (numbers come back as their exact
/// integer or their float, strings as indexed, i.e. lowercased).
fn decode_value(buf: &[u8], pos: &mut usize) -> Option<Value> {
    let tag = *buf.get(*pos)?;
    *pos += 1;
    Some(match tag {
        VAL_NULL => Value::Null,
        VAL_FALSE => Value::Bool(false),
        VAL_TRUE => Value::Bool(true),
        VAL_NUMBER => {
            let f: [u8; 8] = buf.get(*pos..*pos + 8)?.try_into().ok()?;
            let marker = *buf.get(*pos + 8)?;
            *pos += 9;
            let distance = match marker {
                NUM_EXACT => 0,
                NUM_BELOW | NUM_ABOVE => {
                    let d: [u8; 2] = buf.get(*pos..*pos + 2)?.try_into().ok()?;
                    *pos += 2;
                    i128::from((u16::from_be_bytes(d) ^ 0x8000) as i16)
                }
                _ => return None,
            };
            let bits = u64::from_be_bytes(f);
            let bits = if bits >> 63 == 1 {
                bits & !(1 << 63)
            } else {
                !bits
            };
            let approx = f64::from_bits(bits);
            let integer = (approx.fract() == 0.0 && approx.abs() < I128_LIMIT)
                .then(|| approx as i128 + distance);
            match integer.and_then(|i| i64::try_from(i).ok()) {
                Some(i) => Value::from(i),
                None => match integer.and_then(|i| u64::try_from(i).ok()) {
                    Some(u) => Value::from(u),
                    None => Value::from(approx),
                },
            }
        }
        VAL_STRING => Value::String(get_escaped(buf, pos)?),
        _ => return None,
    })
}

/// A document's index entries (path and value, without barrel prefix or doc id), sorted and
/// without duplicates, all in one buffer.
///
/// A document has some thirty entries, made on the thread that takes the write and dropped by
/// the indexer thread: one buffer is two allocations to make and free instead of one an entry
/// (freeing memory another thread allocated is the allocator's slow path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entries {
    bytes: Vec<u8>,
    /// Where each entry ends in `bytes` (it starts where the one before ends).
    ends: Vec<u32>,
}

impl Entries {
    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// `true` when there is none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Entry `i`, in order.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        self.bytes.get(self.start(i)..end)
    }

    /// Where entry `i` starts in `bytes` (where entry `i - 1` ends); `i` may be `len()`.
    fn start(&self, i: usize) -> usize {
        i.checked_sub(1).map_or(0, |p| self.ends[p] as usize)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// Bytes of all entries together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Adds `entry` where it sorts, unless it is there already.
    pub fn insert(&mut self, entry: &[u8]) {
        let (mut at, mut hi) = (0, self.len());
        while at < hi {
            let mid = at + (hi - at) / 2;
            match self.get(mid).unwrap_or_default().cmp(entry) {
                std::cmp::Ordering::Less => at = mid + 1,
                std::cmp::Ordering::Equal => return,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        let start = self.start(at);
        self.bytes.splice(start..start, entry.iter().copied());
        let grow = entry.len() as u32;
        for end in &mut self.ends[at..] {
            *end += grow;
        }
        self.ends.insert(at, start as u32 + grow);
    }

    /// Adds the entry of the document id itself (`$/id/<id>`), when the id is short enough to
    /// index.
    pub fn add_id(&mut self, id: &str) {
        if let Some(e) = id_entry(id) {
            self.insert(&e);
        }
    }

    /// The entries of every list, sorted and without duplicates.
    pub fn union<'a>(lists: impl IntoIterator<Item = &'a Entries>) -> Entries {
        lists.into_iter().flat_map(Entries::iter).collect()
    }

    /// Appends `entry`, wherever it sorts.
    fn push(&mut self, entry: &[u8]) {
        self.bytes.extend_from_slice(entry);
        self.ends.push(self.bytes.len() as u32);
    }

    /// These entries, which may be in any order and have duplicates, sorted and deduplicated.
    fn sorted(self) -> Entries {
        let Entries { bytes, ends } = self;
        let mut spans: Vec<(u32, u32)> = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in &ends {
            spans.push((start, end));
            start = end;
        }
        let span = |&(a, b): &(u32, u32)| &bytes[a as usize..b as usize];
        spans.sort_unstable_by(|a, b| span(a).cmp(span(b)));
        spans.dedup_by(|a, b| span(a) == span(b));
        let mut out = Entries {
            bytes: Vec::with_capacity(bytes.len()),
            ends: Vec::with_capacity(spans.len()),
        };
        for s in &spans {
            out.push(span(s));
        }
        out
    }
}

impl<'a> FromIterator<&'a [u8]> for Entries {
    /// The entries given, sorted and without duplicates.
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(entries: I) -> Entries {
        let mut out = Entries::default();
        for e in entries {
            out.push(e);
        }
        out.sorted()
    }
}

/// The index entries of a document body and its id, sorted and without duplicates.
pub fn entries(id: &str, body: &Body) -> Result<Entries, DocError> {
    let mut out = body_entries(body)?;
    out.add_id(id);
    Ok(out)
}

/// The entry of the document id itself (`$/id/<id>`), when the id is short enough to index.
pub fn id_entry(id: &str) -> Option<Vec<u8>> {
    let scalar = Scalar::Str(id);
    let mut e = Vec::with_capacity(8 + scalar.len_hint());
    put_key_segment(&mut e, "id");
    put_scalar(&mut e, &scalar).then_some(e)
}

/// The index entries of a body (without the id entry), sorted and without duplicates.
pub fn body_entries(body: &Body) -> Result<Entries, DocError> {
    let mut entries = EntriesBuilder::new();
    for (k, v) in body {
        if k != "_attachments" {
            walk_below(&mut entries, |e| e.enter_key(k), v)?;
        }
    }
    Ok(entries.finish())
}

/// Builds a body's index entries while the caller walks the body in another form than
/// [`Value`] (the BEAM binding walks Erlang terms): given the same members (`_attachments`
/// left out), elements and scalars as [`body_entries`] visits, it finishes with the same
/// entries. Enter a member or element, give its scalar or walk below it, then leave.
#[derive(Debug)]
pub struct EntriesBuilder {
    /// The entries so far, in the order given.
    entries: Entries,
    /// Every entry so far came after the one before: nothing to sort.
    in_order: bool,
    /// The encoded path of the value being walked: segments are appended going down and cut
    /// off coming back up, so no entry encodes its path again.
    path: Vec<u8>,
}

impl Default for EntriesBuilder {
    fn default() -> EntriesBuilder {
        EntriesBuilder::new()
    }
}

impl EntriesBuilder {
    /// An empty builder at the top of a body.
    pub fn new() -> EntriesBuilder {
        EntriesBuilder {
            entries: Entries::default(),
            in_order: true,
            path: Vec::with_capacity(64),
        }
    }

    /// Goes down into member `key`; returns the mark [`EntriesBuilder::leave`] takes.
    pub fn enter_key(&mut self, key: &str) -> usize {
        let mark = self.path.len();
        put_key_segment(&mut self.path, key);
        mark
    }

    /// Goes down into element `i`; returns the mark [`EntriesBuilder::leave`] takes.
    pub fn enter_index(&mut self, i: usize) -> usize {
        let mark = self.path.len();
        put_index_segment(&mut self.path, i as u32);
        mark
    }

    /// Comes back up to where `mark` was taken.
    pub fn leave(&mut self, mark: usize) {
        self.path.truncate(mark);
    }

    /// A `null` here.
    pub fn null(&mut self) -> Result<(), DocError> {
        self.scalar(&Scalar::Null)
    }

    /// A boolean here.
    pub fn bool(&mut self, b: bool) -> Result<(), DocError> {
        self.scalar(&Scalar::Bool(b))
    }

    /// A number here.
    pub fn number(&mut self, n: Number) -> Result<(), DocError> {
        self.scalar(&Scalar::Number(n))
    }

    /// A string here.
    pub fn string(&mut self, s: &str) -> Result<(), DocError> {
        self.scalar(&Scalar::Str(s))
    }

    /// Adds the entry of the scalar `v` at the current path, unless the path is too long or
    /// the value is not indexed; refuses the document past [`MAX_ENTRIES`] entries.
    fn scalar(&mut self, v: &Scalar<'_>) -> Result<(), DocError> {
        if self.path.len() <= MAX_INDEXED_PATH {
            let e = &mut self.entries;
            let start = e.bytes.len();
            e.bytes.reserve(self.path.len() + v.len_hint());
            e.bytes.extend_from_slice(&self.path);
            if put_scalar(&mut e.bytes, v) {
                if self.in_order {
                    if let Some(last) = e.len().checked_sub(1).and_then(|i| e.get(i)) {
                        self.in_order = last < &e.bytes[start..];
                    }
                }
                e.ends.push(e.bytes.len() as u32);
            } else {
                e.bytes.truncate(start);
            }
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(DocError::TooLarge(format!(
                "more than {MAX_ENTRIES} indexed values"
            )));
        }
        Ok(())
    }

    /// The entries, sorted and without duplicates. The walks visit members in key order and
    /// elements in index order, which is the order of their encodings: the entries are sorted
    /// only when they did not come in order.
    pub fn finish(self) -> Entries {
        if self.in_order {
            self.entries
        } else {
            self.entries.sorted()
        }
    }
}

/// [`body_entries`] of a body given as JSON without duplicate keys (a stored body, as
/// [`encode_body`](crate::doc::encode_body) wrote it), read without building its [`Value`]s:
/// the same entries, and the same refusal past [`MAX_ENTRIES`] or deeper than
/// [`MAX_DEPTH`](crate::doc::MAX_DEPTH). `Ok(None)` when the JSON is not an object, does not
/// parse, or has `_attachments` (whose stubs the caller must resolve first).
pub(crate) fn json_body_entries(json: &[u8]) -> Result<Option<Entries>, DocError> {
    let mut walk = JsonWalk {
        entries: EntriesBuilder::new(),
        refused: None,
        attachments: false,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let read = serde::de::DeserializeSeed::deserialize(JsonNode(&mut walk, 0), &mut de)
        .and_then(|()| de.end());
    if let Some(e) = walk.refused {
        return Err(e);
    }
    if read.is_err() || walk.attachments {
        return Ok(None);
    }
    Ok(Some(walk.entries.finish()))
}

/// The state of [`json_body_entries`]: the entries so far and the path being read.
struct JsonWalk {
    entries: EntriesBuilder,
    /// Why the document is refused (the walk stops with a parse error then).
    refused: Option<DocError>,
    /// The top-level object has `_attachments`.
    attachments: bool,
}

/// A JSON value at nesting `.1` (0: the body itself; its members' values are at 1, as in
/// `check_depth`), read into the walk.
struct JsonNode<'w>(&'w mut JsonWalk, usize);

impl JsonNode<'_> {
    fn scalar<E: serde::de::Error>(self, v: Scalar<'_>) -> Result<(), E> {
        if self.1 == 0 {
            return Err(E::custom("not an object"));
        }
        let w = self.0;
        w.entries.scalar(&v).map_err(|e| {
            w.refused = Some(e);
            E::custom("refused")
        })
    }

    /// Refuses a value nested deeper than the documents accepted.
    fn check_depth<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if self.1 > crate::doc::MAX_DEPTH {
            self.0.refused = Some(crate::doc::too_deep());
            return Err(E::custom("refused"));
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonNode<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(mut self, d: D) -> Result<(), D::Error> {
        self.check_depth()?;
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonNode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(b))
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<(), E> {
        self.scalar(Scalar::Number(i.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<(), E> {
        self.scalar(Scalar::Number(u.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<(), E> {
        match Number::from_f64(f) {
            Some(n) => self.scalar(Scalar::Number(n)),
            None => Err(E::custom("not a JSON number")),
        }
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(s))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.1 == 0 {
            return Err(serde::de::Error::custom("not an object"));
        }
        let (w, depth) = (self.0, self.1);
        for i in 0.. {
            let mark = w.entries.enter_index(i);
            let more = seq.next_element_seed(JsonNode(w, depth + 1))?;
            w.entries.leave(mark);
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (w, depth) = (self.0, self.1);
        while let Some(k) = map.next_key_seed(JsonKey)? {
            if depth == 0 && k == "_attachments" {
                w.attachments = true;
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let mark = w.entries.enter_key(&k);
            map.next_value_seed(JsonNode(w, depth + 1))?;
            w.entries.leave(mark);
        }
        Ok(())
    }
}

/// An object key, borrowed from the JSON when it has no escapes.
struct JsonKey;

impl<'de> serde::de::DeserializeSeed<'de> for JsonKey {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonKey {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(s.to_owned()))
    }
}

/// Goes down into `v` (`enter` appends its segment), walks it, and comes back up.
fn walk_below(
    entries: &mut EntriesBuilder,
    enter: impl FnOnce(&mut EntriesBuilder) -> usize,
    v: &Value,
) -> Result<(), DocError> {
    let mark = enter(entries);
    let walked = walk(entries, v);
    entries.leave(mark);
    walked
}

fn walk(entries: &mut EntriesBuilder, v: &Value) -> Result<(), DocError> {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                walk_below(entries, |e| e.enter_key(k), v)?;
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk_below(entries, |e| e.enter_index(i), v)?;
            }
        }
        scalar => {
            if let Some(s) = Scalar::of(scalar) {
                entries.scalar(&s)?;
            }
        }
    }
    Ok(())
}

/// A decoded index key: path, value and doc id.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Where the value is.
    pub path: Vec<Segment>,
    /// The value as indexed (strings lowercased).
    pub value: Value,
    /// Start of the value's encoding in the key (after the path).
    pub value_at: usize,
    /// End of the value's encoding (where the doc id starts).
    pub value_end: usize,
    /// The document.
    pub id: String,
}

/// Decodes an index key (without the barrel prefix).
pub fn decode_entry(key: &[u8]) -> Option<Entry> {
    let mut pos = 0;
    let mut path = Vec::new();
    loop {
        match *key.get(pos)? {
            SEG_KEY => {
                pos += 1;
                path.push(Segment::Key(get_escaped(key, &mut pos)?));
            }
            SEG_INDEX => {
                let b: [u8; 4] = key.get(pos + 1..pos + 5)?.try_into().ok()?;
                pos += 5;
                path.push(Segment::Index(u32::from_be_bytes(b)));
            }
            _ => break,
        }
    }
    let value_at = pos;
    let value = decode_value(key, &mut pos)?;
    let id = std::str::from_utf8(key.get(pos..)?).ok()?.to_string();
    Some(Entry {
        path,
        value,
        value_at,
        value_end: pos,
        id,
    })
}

/// Parses a path: `$/a/0/b` (or `/a/0/b`, or `a/0/b`) into segments. Digits are array indexes,
/// `*` is any array index, anything else is an object key; `~1` and `~0` stand for `/` and `~`
/// inside a key (as in JSON pointers).
pub fn parse_path(path: &str) -> Result<Vec<PathPattern>, String> {
    let rest = path
        .strip_prefix("$/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    if rest.is_empty() || path == "$" {
        return Err(format!("empty path {path:?}"));
    }
    rest.split('/')
        .map(|seg| {
            if seg.is_empty() {
                Err(format!("empty segment in {path:?}"))
            } else if seg == "*" {
                Ok(PathPattern::AnyIndex)
            } else if seg.bytes().all(|b| b.is_ascii_digit()) {
                seg.parse::<u32>()
                    .map(|i| PathPattern::Seg(Segment::Index(i)))
                    .map_err(|_| format!("array index {seg} too large"))
            } else {
                Ok(PathPattern::Seg(Segment::Key(
                    seg.replace("~1", "/").replace("~0", "~"),
                )))
            }
        })
        .collect()
}

/// Parses the talk's one-string query, `$/path/.../value`: the last segment is the value
/// (`null`, `true`, `false`, a JSON number, or else a string).
pub fn parse_path_and_value(query: &str) -> Result<(Vec<PathPattern>, Value), String> {
    let (path, value) = query
        .rsplit_once('/')
        .ok_or_else(|| format!("no value in {query:?}"))?;
    if value.is_empty() {
        return Err(format!("no value in {query:?}"));
    }
    let value = match value {
        "null" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        v => match serde_json::from_str::<Value>(v) {
            Ok(n @ Value::Number(_)) => n,
            _ => Value::String(v.replace("~1", "/").replace("~0", "~")),
        },
    };
    Ok((parse_path(path)?, value))
}

/// The smallest key greater than every key starting with `prefix`, or `None` when there is
/// none (all `0xFF`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut k = prefix.to_vec();
    while let Some(last) = k.pop() {
        if last < 0xFF {
            k.push(last + 1);
            return Some(k);
        }
    }
    None
}

/// Does a decoded path match a pattern (same length, each step equal or `*` on an index)?
pub fn path_matches(pattern: &[PathPattern], path: &[Segment]) -> bool {
    pattern.len() == path.len()
        && pattern.iter().zip(path).all(|(p, s)| match (p, s) {
            (PathPattern::AnyIndex, Segment::Index(_)) => true,
            (PathPattern::Seg(a), b) => a == b,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(v: Value) -> Body {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn paths(id: &str, v: Value) -> Vec<(Vec<Segment>, Value)> {
        entries(id, &body(v))
            .unwrap()
            .iter()
            .map(|k| {
                let mut key = k.to_vec();
                key.extend_from_slice(id.as_bytes());
                let e = decode_entry(&key).unwrap();
                assert_eq!(e.id, id);
                (e.path, e.value)
            })
            .collect()
    }

    fn key(s: &str) -> Segment {
        Segment::Key(s.into())
    }

    #[test]
    fn talk_example_entries() {
        let got = paths(
            "ID",
            json!({"locations": [{"country": "France", "city": "creil"}], "headquarter": "France"}),
        );
        assert_eq!(
            got,
            vec![
                (vec![key("headquarter")], json!("france")),
                (vec![key("id")], json!("id")),
                (
                    vec![key("locations"), Segment::Index(0), key("city")],
                    json!("creil")
                ),
                (
                    vec![key("locations"), Segment::Index(0), key("country")],
                    json!("france")
                ),
            ]
        );
    }

    #[test]
    fn entries_out_of_order_and_twice_are_sorted_once() {
        let mut b = EntriesBuilder::new();
        for (k, v) in [("b", 1), ("a", 2), ("b", 1)] {
            let mark = b.enter_key(k);
            b.number(v.into()).unwrap();
            b.leave(mark);
        }
        assert!(!b.in_order);
        let got = b.finish();
        let want = body_entries(&body(json!({"a": 2, "b": 1}))).unwrap();
        assert_eq!(got, want);
        assert_eq!(got.len(), 2);
        let mut with_id = got.clone();
        with_id.add_id("x");
        with_id.add_id("x");
        assert_eq!(
            with_id,
            entries("x", &body(json!({"a": 2, "b": 1}))).unwrap()
        );
        assert_eq!(with_id.len(), 3);
    }

    #[test]
    fn limits_and_skipped_values() {
        let long = "x".repeat(MAX_INDEXED_STRING + 1);
        let got = paths(
            "a",
            json!({"long": long, "empty": [], "obj": {}, "_attachments": {"f": {"x": 1}}}),
        );
        assert_eq!(got, vec![(vec![key("id")], json!("a"))]);
        let many: Vec<u32> = (0..=MAX_ENTRIES as u32).collect();
        assert!(matches!(
            entries("a", &body(json!({ "many": many }))),
            Err(DocError::TooLarge(_))
        ));
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("$/locations/*/country").unwrap(),
            vec![
                PathPattern::Seg(key("locations")),
                PathPattern::AnyIndex,
                PathPattern::Seg(key("country"))
            ]
        );
        assert_eq!(
            parse_path("/a~1b/3").unwrap(),
            vec![
                PathPattern::Seg(key("a/b")),
                PathPattern::Seg(Segment::Index(3))
            ]
        );
        assert!(parse_path("$/a//b").is_err());
        assert!(parse_path("$/99999999999").is_err());
        let (p, v) = parse_path_and_value("$/age/42").unwrap();
        assert_eq!((p, v), (vec![PathPattern::Seg(key("age"))], json!(42)));
        let (_, v) = parse_path_and_value("$/headquarter/france").unwrap();
        assert_eq!(v, json!("france"));
        assert!(parse_path_and_value("nothing").is_err());
        assert!(parse_path_and_value("$/n").is_err());
        assert!(parse_path("$").is_err());
        assert!(parse_path("").is_err());
    }

    #[test]
    fn numbers_take_ten_bytes_unless_an_integer_rounds() {
        for n in [
            json!(0),
            json!(-7),
            json!(1.5),
            json!(1e300),
            json!(9_007_199_254_740_992u64),
        ] {
            assert_eq!(encode_value(&n).unwrap().len(), 10, "{n}");
        }
        // 2^53 + 1 and u64::MAX round to an f64 they are not.
        for n in [
            json!(9_007_199_254_740_993u64),
            json!(u64::MAX),
            json!(i64::MIN + 1),
        ] {
            let e = encode_value(&n).unwrap();
            assert_eq!(e.len(), 12, "{n}");
            let mut pos = 0;
            assert_eq!(decode_value(&e, &mut pos), Some(n));
            assert_eq!(pos, 12);
        }
        assert_eq!(encode_value(&json!(1.0)), encode_value(&json!(1)));
        // A marker no encoding writes.
        let mut bad = encode_value(&json!(1)).unwrap();
        bad[9] = 0x33;
        assert_eq!(decode_value(&bad, &mut 0), None);
    }

    fn arb_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e20f64..1e20).prop_map(Value::from),
            (0u32..2048)
                .prop_map(|d| Value::from(18_446_744_073_709_551_615f64 - f64::from(d) * 2048.0)),
            (0u64..4096).prop_map(|d| Value::from(u64::MAX - d)),
            (-50i64..50).prop_map(|i| Value::from(i as f64 / 4.0)),
            "[a-zA-Z\u{e9}\u{0}]{0,6}".prop_map(Value::String),
        ]
    }

    /// Objects of scalars, arrays and objects, keys from a small alphabet (NUL included, which
    /// the encoding escapes), so that keys share prefixes.
    fn arb_doc() -> impl Strategy<Value = Value> {
        let leaf = arb_scalar();
        let tree = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[ab\u{0}]{0,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("[ab\u{0}]{0,3}", tree, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn type_rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(false) => 1,
            Value::Bool(true) => 2,
            Value::Number(_) => 3,
            _ => 4,
        }
    }

    /// The order the encoding must give: by type, then numerically, then by lowercased bytes.
    fn model_cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
        let num = |n: &Number| -> (f64, i128) {
            let exact = n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from));
            match exact {
                Some(i) => (i as f64, i),
                None => {
                    let f = n.as_f64().unwrap();
                    if f.fract() == 0.0 && f.abs() < I128_LIMIT {
                        (f, f as i128)
                    } else {
                        (f, 0)
                    }
                }
            }
        };
        type_rank(a).cmp(&type_rank(b)).then_with(|| match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (fx, ix) = num(x);
                let (fy, iy) = num(y);
                fx.partial_cmp(&fy).unwrap().then(ix.cmp(&iy))
            }
            (Value::String(x), Value::String(y)) => normalize(x).cmp(&normalize(y)),
            _ => std::cmp::Ordering::Equal,
        })
    }

    #[test]
    fn entries_read_from_json_skip_what_needs_the_values() {
        // Escapes, non-ASCII, numbers of every kind, nesting, an over-long string.
        let doc = json!({"a": {"b\"c": ["X\u{e9}", 1, -2, 1.0, 2.5e300, 18446744073709551615u64,
            null, true, [], {}]}, "long": "x".repeat(MAX_INDEXED_STRING + 1), "\u{0}": 0});
        let json = crate::doc::encode_body(&body(doc));
        let b = crate::doc::decode_body(&json).unwrap();
        assert_eq!(
            json_body_entries(&json).unwrap(),
            Some(body_entries(&b).unwrap())
        );
        // Attachments, not an object, not JSON: left to the decoded path.
        let atts = br#"{"_attachments":{"f":{"stub":true}},"a":1}"#;
        assert_eq!(json_body_entries(atts).unwrap(), None);
        assert_eq!(json_body_entries(b"[1]").unwrap(), None);
        assert_eq!(json_body_entries(b"1").unwrap(), None);
        assert_eq!(json_body_entries(b"{\"a\":").unwrap(), None);
        assert_eq!(json_body_entries(b"{} 1").unwrap(), None);
        // `_attachments` below the top is an ordinary member.
        let nested = body(json!({"a": {"_attachments": 1}}));
        let json = crate::doc::encode_body(&nested);
        assert_eq!(
            json_body_entries(&json).unwrap(),
            Some(body_entries(&nested).unwrap())
        );
    }

    #[test]
    fn entries_read_from_json_refuse_what_the_values_refuse() {
        let many = Value::Array((0..=MAX_ENTRIES).map(Value::from).collect());
        let b = body(json!({ "a": many }));
        assert!(matches!(body_entries(&b), Err(DocError::TooLarge(_))));
        let json = crate::doc::encode_body(&b);
        assert!(matches!(
            json_body_entries(&json),
            Err(DocError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn value_encoding_preserves_order(a in arb_scalar(), b in arb_scalar()) {
            let (ea, eb) = (encode_value(&a).unwrap(), encode_value(&b).unwrap());
            prop_assert_eq!(ea.cmp(&eb), model_cmp(&a, &b), "{:?} vs {:?}", a, b);
        }

        #[test]
        fn escaped_strings_read_back_and_keep_their_order(
            a in "[a\u{0}\u{1}\u{ff}é]{0,8}",
            b in "[a\u{0}\u{1}\u{ff}é]{0,8}",
        ) {
            let (mut ea, mut eb) = (vec![7], vec![7]);
            put_escaped(&mut ea, &a);
            put_escaped(&mut eb, &b);
            ea.push(0x02);
            let (mut pa, mut pb) = (1, 1);
            prop_assert_eq!(get_escaped(&ea, &mut pa), Some(a.clone()));
            prop_assert_eq!(get_escaped(&eb, &mut pb), Some(b.clone()));
            prop_assert_eq!((pa, pb), (ea.len() - 1, eb.len()));
            prop_assert_eq!(ea[..ea.len() - 1].cmp(&eb[..]), a.as_bytes().cmp(b.as_bytes()));
        }

        #[test]
        fn strings_are_indexed_lowercased(s in "[a-zA-Z\u{0}\u{c9}\u{e9}\u{130}ß ]{0,12}") {
            let mut want = vec![VAL_STRING];
            put_escaped(&mut want, &s.to_lowercase());
            prop_assert_eq!(encode_value(&Value::String(s)), Some(want));
        }

        #[test]
        fn entries_are_a_sorted_set(
            lists in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(0u8..4, 0..4), 0..12),
                1..4,
            ),
            extra in proptest::collection::vec(0u8..4, 0..4),
        ) {
            // Model: a sorted vector of distinct byte strings.
            let model = |v: &mut Vec<Vec<u8>>| {
                v.sort();
                v.dedup();
            };
            let as_vecs = |e: &Entries| e.iter().map(<[u8]>::to_vec).collect::<Vec<_>>();
            let mut all = Vec::new();
            let mut built = Vec::new();
            for list in &lists {
                let e: Entries = list.iter().map(Vec::as_slice).collect();
                let mut want = list.clone();
                model(&mut want);
                prop_assert_eq!(as_vecs(&e), want.clone());
                prop_assert_eq!(e.len(), want.len());
                prop_assert_eq!(e.byte_len(), want.iter().map(Vec::len).sum::<usize>());
                prop_assert_eq!(e.get(want.len()), None);
                let mut inserted = e.clone();
                inserted.insert(&extra);
                let mut want_inserted = want.clone();
                want_inserted.push(extra.clone());
                model(&mut want_inserted);
                prop_assert_eq!(as_vecs(&inserted), want_inserted);
                all.extend(want);
                built.push(e);
            }
            model(&mut all);
            prop_assert_eq!(as_vecs(&Entries::union(&built)), all);
        }

        #[test]
        fn entries_given_out_of_order_are_sorted(doc in arb_doc()) {
            // A caller walking members in another order than the index's still gets the
            // entries sorted.
            let body = body(doc);
            let mut builder = EntriesBuilder::new();
            for (k, v) in body.iter().rev() {
                walk_below(&mut builder, |e| e.enter_key(k), v).unwrap();
            }
            prop_assert_eq!(builder.finish(), body_entries(&body).unwrap());
        }

        #[test]
        fn entries_come_sorted_from_the_walk(doc in arb_doc()) {
            // What `body_entries` sorts is already in order: the walk's order is the index's.
            let mut entries = EntriesBuilder::new();
            for (k, v) in &body(doc.clone()) {
                walk_below(&mut entries, |e| e.enter_key(k), v).unwrap();
            }
            prop_assert!(entries.path.is_empty());
            prop_assert!(entries.in_order);
            prop_assert_eq!(entries.finish(), body_entries(&body(doc)).unwrap());
        }

        #[test]
        fn entries_read_from_json_are_the_entries_of_the_values(doc in arb_doc()) {
            // The same entries as the values written (floats read back exactly) and as the body
            // decoded from the same JSON.
            let b = body(doc);
            let json = crate::doc::encode_body(&b);
            let decoded = crate::doc::decode_body(&json).unwrap();
            let entries = json_body_entries(&json).unwrap();
            prop_assert_eq!(&entries, &Some(body_entries(&b).unwrap()));
            prop_assert_eq!(entries, Some(body_entries(&decoded).unwrap()));
        }

        #[test]
        fn entries_built_by_a_walk_are_the_entries_of_the_values(doc in arb_doc()) {
            // How the BEAM binding drives the builder while it walks terms.
            fn visit(b: &mut EntriesBuilder, v: &Value) -> Result<(), DocError> {
                match v {
                    Value::Object(m) => {
                        for (k, v) in m {
                            let mark = b.enter_key(k);
                            visit(b, v)?;
                            b.leave(mark);
                        }
                        Ok(())
                    }
                    Value::Array(a) => {
                        for (i, v) in a.iter().enumerate() {
                            let mark = b.enter_index(i);
                            visit(b, v)?;
                            b.leave(mark);
                        }
                        Ok(())
                    }
                    Value::Null => b.null(),
                    Value::Bool(x) => b.bool(*x),
                    Value::Number(n) => b.number(n.clone()),
                    Value::String(s) => b.string(s),
                }
            }
            let body = body(doc);
            let mut builder = EntriesBuilder::new();
            for (k, v) in &body {
                if k != "_attachments" {
                    let mark = builder.enter_key(k);
                    visit(&mut builder, v).unwrap();
                    builder.leave(mark);
                }
            }
            prop_assert_eq!(builder.finish(), body_entries(&body).unwrap());
        }

        #[test]
        fn entries_decode_back(k in "[a-z\u{0}/~]{1,5}", v in arb_scalar()) {
            let doc = json!({ k.clone(): [v.clone()] });
            let got = paths("d", doc);
            let want_path = vec![key(&k), Segment::Index(0)];
            let found = got.iter().find(|(p, _)| *p == want_path).unwrap();
            prop_assert_eq!(model_cmp(&found.1, &v), std::cmp::Ordering::Equal);
        }
    }
}
