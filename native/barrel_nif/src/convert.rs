//! Erlang terms ⇄ JSON values.
//!
//! In: maps with UTF-8 binary keys → objects, UTF-8 binaries → strings, integers (64-bit) and
//! floats → numbers, `true`/`false` → booleans, `null` and `nil` → null, proper lists → arrays.
//! Anything else is refused with the JSON-pointer path of the offending value or key.
//! Out: the same mapping back, with null as the atom the caller asks for (`null` for Erlang,
//! `nil` for Elixir).

use barrel_core::doc::MAX_DEPTH;
use barrel_core::DocError;
use rustler::types::atom::Atom;
use rustler::types::map::MapIterator;
use rustler::{Encoder, Env, Term, TermType};
use serde_json::{Map, Number, Value};

pub(crate) mod atoms {
    rustler::atoms! { null, nil }
}

/// The atoms a document may give JSON null as: `null` and `nil` (Elixir's).
pub(crate) fn is_null_atom(a: Atom) -> bool {
    a == atoms::null() || a == atoms::nil()
}

/// `/segment` of a JSON pointer, with `~` and `/` escaped.
pub(crate) fn pointer_segment(seg: &str) -> String {
    format!("/{}", seg.replace('~', "~0").replace('/', "~1"))
}

/// Why a conversion stopped.
enum Stop {
    /// A value (or with `key`, a map key) with no JSON form; `path` leads to it, innermost
    /// segment first (each level adds its own on the way out, so a conversion that succeeds
    /// builds no path at all).
    Invalid {
        key: bool,
        path: Vec<String>,
    },
    Refused(DocError),
    OverBudget,
}

impl From<DocError> for Stop {
    fn from(e: DocError) -> Self {
        Stop::Refused(e)
    }
}

impl Stop {
    fn invalid() -> Stop {
        Stop::Invalid {
            key: false,
            path: Vec::new(),
        }
    }

    /// The same stop, seen from the level above: `seg` leads to where it happened.
    fn within(mut self, seg: impl FnOnce() -> String) -> Stop {
        if let Stop::Invalid { path, .. } = &mut self {
            path.push(seg());
        }
        self
    }
}

/// Converts a term to a JSON value unless that costs more than what is left of `budget` (about
/// one unit per byte, spent as it goes): `Ok(None)` then, so a normal scheduler can hand big
/// documents to a dirty one.
pub(crate) fn term_to_value_within(
    term: Term,
    budget: &mut usize,
) -> Result<Option<Value>, DocError> {
    match to_value(term, 0, budget) {
        Ok(v) => Ok(Some(v)),
        Err(Stop::Invalid { key, path }) => {
            let at: String = path.iter().rev().map(|seg| pointer_segment(seg)).collect();
            Err(if key {
                DocError::InvalidKey(at)
            } else {
                DocError::InvalidValue(at)
            })
        }
        Err(Stop::Refused(e)) => Err(e),
        Err(Stop::OverBudget) => Ok(None),
    }
}

fn spend(budget: &mut usize, cost: usize) -> Result<(), Stop> {
    *budget = budget.checked_sub(cost).ok_or(Stop::OverBudget)?;
    Ok(())
}

/// `term` at `depth` segments below the document.
fn to_value(term: Term, depth: usize, budget: &mut usize) -> Result<Value, Stop> {
    if depth > MAX_DEPTH {
        return Err(barrel_core::doc::too_deep().into());
    }
    spend(budget, 16)?;
    match term.get_type() {
        TermType::Map => {
            let size = term.map_size().map_err(|_| Stop::invalid())?;
            let iter = MapIterator::new(term).ok_or_else(Stop::invalid)?;
            let mut members = Vec::with_capacity(size);
            for (k, v) in iter {
                let Ok(key) = k.decode::<String>() else {
                    return Err(Stop::Invalid {
                        key: true,
                        path: vec![format!("{k:?}")],
                    });
                };
                spend(budget, key.len())?;
                let value = to_value(v, depth + 1, budget).map_err(|e| e.within(|| key.clone()))?;
                members.push((key, value));
            }
            // Small Erlang maps iterate in key order: collecting builds the tree from sorted
            // members in one pass, where inserting one by one searched it each time.
            Ok(Value::Object(Map::from_iter(members)))
        }
        TermType::Binary => {
            let s = term.decode::<String>().map_err(|_| Stop::invalid())?;
            spend(budget, s.len())?;
            Ok(Value::String(s))
        }
        TermType::Integer => {
            if let Ok(i) = term.decode::<i64>() {
                Ok(Value::from(i))
            } else if let Ok(u) = term.decode::<u64>() {
                Ok(Value::from(u))
            } else {
                Err(Stop::invalid())
            }
        }
        TermType::Float => {
            let f = term.decode::<f64>().map_err(|_| Stop::invalid())?;
            Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(Stop::invalid)
        }
        TermType::Atom => {
            let a = term.decode::<Atom>().map_err(|_| Stop::invalid())?;
            if a == rustler::types::atom::true_() {
                Ok(Value::Bool(true))
            } else if a == rustler::types::atom::false_() {
                Ok(Value::Bool(false))
            } else if is_null_atom(a) {
                Ok(Value::Null)
            } else {
                Err(Stop::invalid())
            }
        }
        TermType::List => {
            // Check properness first: iterating an improper list panics in rustler.
            let len = term.list_length().map_err(|_| Stop::invalid())?;
            let iter = term.into_list_iterator().map_err(|_| Stop::invalid())?;
            let mut out = Vec::with_capacity(len);
            for (i, item) in iter.enumerate() {
                out.push(
                    to_value(item, depth + 1, budget).map_err(|e| e.within(|| i.to_string()))?,
                );
            }
            Ok(Value::Array(out))
        }
        _ => Err(Stop::invalid()),
    }
}

/// Converts a JSON value to a term; JSON null becomes `null_atom`.
pub(crate) fn value_to_term<'a>(env: Env<'a>, v: &Value, null_atom: Atom) -> Term<'a> {
    match v {
        Value::Null => null_atom.encode(env),
        Value::Bool(b) => b.encode(env),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.encode(env)
            } else if let Some(u) = n.as_u64() {
                u.encode(env)
            } else {
                n.as_f64().unwrap_or(0.0).encode(env)
            }
        }
        Value::String(s) => s.as_str().encode(env),
        Value::Array(a) => {
            let items: Vec<Term<'a>> = a.iter().map(|x| value_to_term(env, x, null_atom)).collect();
            items.encode(env)
        }
        Value::Object(m) => map_to_term(env, m, null_atom),
    }
}

/// Converts a JSON object to a map term.
pub(crate) fn map_to_term<'a>(env: Env<'a>, m: &Map<String, Value>, null_atom: Atom) -> Term<'a> {
    // Keys come from a JSON object, so they are unique.
    pairs_map(
        env,
        m.iter()
            .map(|(k, v)| (k.as_str().encode(env), value_to_term(env, v, null_atom))),
    )
}

/// A map term of `pairs`, whose keys are all different: building it cannot fail (should it,
/// the map is empty).
pub(crate) fn pairs_map<'a>(
    env: Env<'a>,
    pairs: impl IntoIterator<Item = (Term<'a>, Term<'a>)>,
) -> Term<'a> {
    let (keys, values): (Vec<Term<'a>>, Vec<Term<'a>>) = pairs.into_iter().unzip();
    Term::map_from_term_arrays(env, &keys, &values)
        .unwrap_or_else(|_| rustler::types::map::map_new(env))
}

/// Members added to a decoded document's top-level object (special members such as `id` and
/// `_rev`), as terms, in key order.
pub(crate) type Extra<'a, 'k> = [(&'k str, Term<'a>)];

/// The members of `m` (a document's special members) as [`Extra`] members.
pub(crate) fn extra_terms<'a, 'm>(
    env: Env<'a>,
    m: &'m Map<String, Value>,
    null_atom: Atom,
) -> Vec<(&'m str, Term<'a>)> {
    m.iter()
        .map(|(k, v)| (k.as_str(), value_to_term(env, v, null_atom)))
        .collect()
}

/// Decodes a stored JSON object straight into a map term (no intermediate JSON value), adding
/// the `extra` members: none among the object's own, in key order (the map is then built
/// from sorted keys, which the VM checks in one pass).
pub(crate) fn json_to_term<'a>(
    env: Env<'a>,
    json: &[u8],
    extra: &Extra<'a, '_>,
    null_atom: Atom,
) -> Result<Term<'a>, String> {
    use serde::de::DeserializeSeed;
    // One UTF-8 check of the whole body, then parsers that trust it: checking each string as
    // it is parsed took more time (several short calls a document).
    let json = std::str::from_utf8(json).map_err(|e| e.to_string())?;
    let mut fast = FastJson {
        env,
        text: json,
        pos: 0,
        depth: 0,
        null_atom,
        keys: Vec::with_capacity(64),
        values: Vec::with_capacity(64),
    };
    if let Some(term) = fast.document(extra) {
        return Ok(term);
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let seed = TermSeed {
        env,
        null_atom,
        extra: Some(extra),
    };
    let term = seed.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(term)
}

/// Appends the members of `extra` (a fetched document's `id`, `_rev`, ...) to a map's keys and
/// values.
fn push_members<'a>(
    env: Env<'a>,
    extra: Option<&Extra<'a, '_>>,
    keys: &mut Vec<Term<'a>>,
    values: &mut Vec<Term<'a>>,
) {
    for &(k, v) in extra.into_iter().flatten() {
        keys.push(k.encode(env));
        values.push(v);
    }
}

/// Deepest nesting [`FastJson`] follows before leaving the document to serde_json (which
/// refuses what is too deep).
const FAST_MAX_DEPTH: usize = 128;

/// A decoder for the JSON the store writes (serde_json's compact output), straight into terms:
/// objects, arrays, strings without escapes, integers that fit an `i64`, floats, literals. On
/// anything else (an escaped string, a larger integer, input that is not JSON) it gives up
/// with `None` and the caller decodes with serde_json instead, which covers every case and
/// reports errors; the two give the same terms. About twice as fast as serde_json's
/// deserializer here, which matters to `fetch_doc` on a normal scheduler.
struct FastJson<'a, 'j> {
    env: Env<'a>,
    /// Valid UTF-8, so any slice between two ASCII bytes is a `str`.
    text: &'j str,
    pos: usize,
    depth: usize,
    null_atom: Atom,
    /// The keys of the objects being read, innermost last (one buffer for the whole
    /// document instead of two vectors an object).
    keys: Vec<Term<'a>>,
    /// The values of the objects and the items of the arrays being read, innermost last.
    values: Vec<Term<'a>>,
}

impl<'a, 'j> FastJson<'a, 'j> {
    /// The top-level object with `extra`'s members added, the whole input consumed.
    fn document(&mut self, extra: &Extra<'a, '_>) -> Option<Term<'a>> {
        self.ws();
        if self.peek()? != b'{' {
            return None;
        }
        let term = self.object(Some(extra))?;
        self.ws();
        (self.pos == self.text.len()).then_some(term)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Option<Term<'a>> {
        self.ws();
        match self.peek()? {
            b'{' => self.object(None),
            b'[' => self.array(),
            b'"' => Some(self.string()?.encode(self.env)),
            b't' => self.literal("true", true.encode(self.env)),
            b'f' => self.literal("false", false.encode(self.env)),
            b'n' => self.literal("null", self.null_atom.encode(self.env)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, term: Term<'a>) -> Option<Term<'a>> {
        let end = self.pos + word.len();
        (self.text.get(self.pos..end)? == word).then(|| {
            self.pos = end;
            term
        })
    }

    /// A string without escapes or control characters (else `None`).
    fn string(&mut self) -> Option<&'j str> {
        let start = self.pos + 1;
        let rest = self.text.as_bytes().get(start..)?;
        // The first quote ends the string unless an escape comes before it, and then the
        // string is left to serde_json: one fast search, then one branch-free pass (the
        // compiler vectorizes it) over the bytes for escapes and control characters.
        let len = memchr::memchr(b'"', rest)?;
        let special = rest[..len]
            .iter()
            .fold(false, |seen, &b| seen | (b == b'\\') | (b < 0x20));
        if special {
            return None;
        }
        let end = start + len;
        self.pos = end + 1;
        self.text.get(start..end)
    }

    /// An integer that fits an `i64`, or a float (JSON's number grammar; else `None`).
    fn number(&mut self) -> Option<Term<'a>> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut at = start + usize::from(bytes[start] == b'-');
        let digits = |at: &mut usize| {
            let from = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at - from
        };
        let int_digits = digits(&mut at);
        if int_digits == 0 || (int_digits > 1 && bytes[at - int_digits] == b'0') {
            return None;
        }
        let mut float = false;
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if digits(&mut at) == 0 {
                return None;
            }
            float = true;
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            if digits(&mut at) == 0 {
                return None;
            }
            float = true;
        }
        let text = &self.text[start..at];
        self.pos = at;
        if float {
            let f: f64 = text.parse().ok()?;
            f.is_finite().then(|| f.encode(self.env))
        } else {
            Some(text.parse::<i64>().ok()?.encode(self.env))
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.pos += 1;
        self.depth += 1;
        (self.depth <= FAST_MAX_DEPTH).then_some(())
    }

    /// The members of an array or object up to its `close` byte, each read by `member`.
    fn members(
        &mut self,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.ws();
        if self.peek()? == close {
            self.pos += 1;
            return Some(());
        }
        loop {
            member(self)?;
            self.ws();
            match self.next()? {
                b',' => {}
                c if c == close => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self) -> Option<Term<'a>> {
        self.enter()?;
        let base = self.values.len();
        self.members(b']', |p| {
            let item = p.value()?;
            p.values.push(item);
            Some(())
        })?;
        self.depth -= 1;
        let list = self.values[base..].encode(self.env);
        self.values.truncate(base);
        Some(list)
    }

    fn object(&mut self, extra: Option<&Extra<'a, '_>>) -> Option<Term<'a>> {
        self.enter()?;
        let (key_base, value_base) = (self.keys.len(), self.values.len());
        // `extra`'s members go in among the stored ones in key order (both are sorted): the
        // map is then built from sorted keys, which the VM checks in one pass instead of
        // moving each added key down to its place.
        let mut extra = extra.into_iter().flatten().peekable();
        let env = self.env;
        let mut push_extra_below =
            |keys: &mut Vec<Term<'a>>, values: &mut Vec<Term<'a>>, below: Option<&str>| {
                while let Some(&(k, v)) = extra.next_if(|(k, _)| below.is_none_or(|b| *k < b)) {
                    keys.push(k.encode(env));
                    values.push(v);
                }
            };
        self.members(b'}', |p| {
            p.ws();
            if p.peek()? != b'"' {
                return None;
            }
            let key = p.string()?;
            push_extra_below(&mut p.keys, &mut p.values, Some(key));
            p.keys.push(key.encode(p.env));
            p.ws();
            if p.next()? != b':' {
                return None;
            }
            let value = p.value()?;
            p.values.push(value);
            Some(())
        })?;
        push_extra_below(&mut self.keys, &mut self.values, None);
        self.depth -= 1;
        // A duplicate key fails here: serde_json's path reports it.
        let map = Term::map_from_term_arrays(
            self.env,
            &self.keys[key_base..],
            &self.values[value_base..],
        )
        .ok();
        self.keys.truncate(key_base);
        self.values.truncate(value_base);
        map
    }
}

/// Builds terms while serde_json parses. `extra` members are added to the top-level object.
struct TermSeed<'a, 'x, 'k> {
    env: Env<'a>,
    null_atom: Atom,
    extra: Option<&'x Extra<'a, 'k>>,
}

impl<'de, 'a> serde::de::DeserializeSeed<'de> for TermSeed<'a, '_, '_> {
    type Value = Term<'a>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Term<'a>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'a> serde::de::Visitor<'de> for TermSeed<'a, '_, '_> {
    type Value = Term<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Term<'a>, E> {
        Ok(v.encode(self.env))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Term<'a>, E> {
        Ok(v.encode(self.env))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Term<'a>, E> {
        Ok(v.encode(self.env))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Term<'a>, E> {
        Ok(v.encode(self.env))
    }

    fn visit_str<E>(self, v: &str) -> Result<Term<'a>, E> {
        Ok(v.encode(self.env))
    }

    fn visit_unit<E>(self) -> Result<Term<'a>, E> {
        Ok(self.null_atom.encode(self.env))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Term<'a>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(t) = seq.next_element_seed(TermSeed {
            env: self.env,
            null_atom: self.null_atom,
            extra: None,
        })? {
            items.push(t);
        }
        Ok(items.encode(self.env))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Term<'a>, A::Error> {
        let extra_len = self.extra.map_or(0, |e| e.len());
        let mut keys = Vec::with_capacity(map.size_hint().unwrap_or(8) + extra_len);
        let mut values = Vec::with_capacity(keys.capacity());
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            keys.push(k.as_ref().encode(self.env));
            values.push(map.next_value_seed(TermSeed {
                env: self.env,
                null_atom: self.null_atom,
                extra: None,
            })?);
        }
        push_members(self.env, self.extra, &mut keys, &mut values);
        Term::map_from_term_arrays(self.env, &keys, &values)
            .map_err(|_| serde::de::Error::custom("duplicate key in stored document"))
    }
}
