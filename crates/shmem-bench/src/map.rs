//! `Map` against the stores people use instead, in one run: `get` and `set` of a 64-byte value
//! among 10,000 keys and among 100 (each call takes the next key, so the whole table is
//! touched), one hot key (the lookup's own cost with its lines in cache), and a `Value` get of
//! 64 bytes beside them; then the same operations on
//! - Redis `HGET`/`HSET` of one hash over a Unix socket, a private `redis-server` (no
//!   persistence) started for the run in a temporary directory and killed at its end;
//! - iceoryx2's blackboard (feature `iceoryx2`): its keys are fixed when the service is
//!   created, its values are fixed-size types (`[u8; 64]` here) under `u64` keys, and a read
//!   goes through an entry handle made beforehand by a key lookup. Both are timed: a call on
//!   handles made beforehand (one per key), and `entry(key)` + `get` per call, which is what a
//!   lookup by key costs there.
//!
//! All entries join the run's interleaved blocks (`Plan::run`), so every ratio is taken under
//! the same load. Python's `shared-memory-dict` is measured by `python/bench/bench.py`.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use shmem::{Map, Value};

use crate::measure::Entry;
use crate::peers::{redis_installed, resp, start_redis, Redis};
use crate::stats::{Kind, Results};
use crate::{Ctx, Scenario};

/// Keys in the big map.
pub const KEYS: usize = 10_000;
/// Keys in the small map.
pub const FEW: usize = 100;
/// The value size.
pub const SIZE: usize = 64;

fn to_io(e: shmem::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The name of key `i`, the same in every store.
pub fn key(i: usize) -> String {
    format!("key-{i:05}")
}

/// The length of every key name ([`key`]).
const KEY_LEN: usize = 9;

/// The names of `n` keys ([`key`]) in one buffer, [`KEY_LEN`] bytes apart. A timed call takes
/// its key from here with no pointer to follow, as a key written in the program's source
/// would be: from a `Vec<String>` each call would first load the string's pointer, then its
/// bytes from a heap block of their own (560 KB for 10,000 keys besides the map's own lines),
/// a cost of the harness that the `Value` get it is compared with does not pay.
#[derive(Debug)]
struct Keys {
    bytes: Vec<u8>,
}

impl Keys {
    fn new(n: usize) -> Keys {
        let bytes: Vec<u8> = (0..n).flat_map(|i| key(i).into_bytes()).collect();
        assert_eq!(bytes.len(), n * KEY_LEN, "key names of {KEY_LEN} bytes");
        Keys { bytes }
    }

    fn len(&self) -> usize {
        self.bytes.len() / KEY_LEN
    }

    /// Key `i`'s name.
    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[i * KEY_LEN..(i + 1) * KEY_LEN]
    }
}

/// "10k keys" / "100 keys", as the figures name the two sizes.
fn keys_label(n: usize) -> String {
    if n >= 1000 && n % 1000 == 0 {
        format!("{}k keys", n / 1000)
    } else {
        format!("{n} keys")
    }
}

/// An index that steps through `0..n` on each call (a compare, not a division: the harness's
/// own work on the path to each timed call's key).
fn cycle(n: usize) -> impl FnMut() -> usize {
    let mut i = 0;
    move || {
        i += 1;
        if i == n {
            i = 0;
        }
        i
    }
}

/// One shmem map filled with `keys.len()` keys of 64 bytes.
#[derive(Debug)]
struct Filled {
    map: Map,
    keys: Keys,
}

impl Filled {
    fn new(cx: &Ctx, tag: &str, n: usize, capacity: usize) -> io::Result<Filled> {
        let map = Map::open(&cx.name(tag), capacity).map_err(to_io)?;
        let keys = Keys::new(n);
        for i in 0..n {
            map.set(keys.get(i), &[0x5a; SIZE]).map_err(to_io)?;
        }
        Ok(Filled { map, keys })
    }
}

/// A Redis hash `h` of `n` fields of 64 bytes, on a connection of its own.
#[derive(Debug)]
pub struct RedisHash {
    sock: UnixStream,
    /// `HGET h key-i` for each key, encoded once.
    gets: Vec<Vec<u8>>,
    /// `HSET h key-i VALUE` for each key, encoded once.
    sets: Vec<Vec<u8>>,
}

/// Reads one RESP reply line (up to `\r\n`).
fn read_line(s: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut b)?;
        line.push(b[0]);
    }
    Ok(line)
}

impl RedisHash {
    /// Fills hash `hash` on the server at `sock` with `n` fields (one `HSET` of them all).
    pub fn new(mut sock: UnixStream, hash: &str, n: usize) -> io::Result<RedisHash> {
        let value = [b'v'; SIZE];
        let names: Vec<String> = (0..n).map(key).collect();
        let mut fill: Vec<&[u8]> = vec![b"HSET", hash.as_bytes()];
        for k in &names {
            fill.push(k.as_bytes());
            fill.push(&value);
        }
        sock.write_all(&resp(&fill))?;
        let reply = read_line(&mut sock)?;
        if reply != format!(":{n}\r\n").as_bytes() {
            return Err(io::Error::other(format!(
                "redis: unexpected reply to the filling HSET: {}",
                String::from_utf8_lossy(&reply)
            )));
        }
        Ok(RedisHash {
            sock,
            gets: names
                .iter()
                .map(|k| resp(&[b"HGET", hash.as_bytes(), k.as_bytes()]))
                .collect(),
            sets: names
                .iter()
                .map(|k| resp(&[b"HSET", hash.as_bytes(), k.as_bytes(), &value]))
                .collect(),
        })
    }

    /// `HGET` of field `i`: one round trip; checks that the reply is the 64-byte value.
    pub fn get(&self, i: usize, buf: &mut [u8; SIZE + 7]) -> io::Result<()> {
        let mut s = &self.sock;
        s.write_all(&self.gets[i])?;
        s.read_exact(buf)?;
        if &buf[..5] != b"$64\r\n" || &buf[SIZE + 5..] != b"\r\n" {
            return Err(io::Error::other("redis: unexpected reply to HGET"));
        }
        Ok(())
    }

    /// `HSET` of field `i` (an existing field: the reply is `:0`).
    pub fn set(&self, i: usize) -> io::Result<()> {
        let mut s = &self.sock;
        s.write_all(&self.sets[i])?;
        let mut reply = [0u8; 4];
        s.read_exact(&mut reply)?;
        if &reply != b":0\r\n" {
            return Err(io::Error::other("redis: unexpected reply to HSET"));
        }
        Ok(())
    }
}

/// The `map` group's set-up.
#[derive(Debug)]
pub struct MapGroup {
    maps: Vec<Filled>,
    value: Value,
    /// The server (killed on drop) and one hash per map size.
    redis: Option<(Redis, Vec<RedisHash>)>,
    #[cfg(feature = "iceoryx2")]
    boards: Vec<crate::ice::KeyBoard>,
}

impl MapGroup {
    /// Fills the maps, and the peers that are available.
    pub fn new(cx: &Ctx, r: &mut Results) -> io::Result<MapGroup> {
        let maps = vec![
            Filled::new(cx, "map", KEYS, 1 << 20)?,
            Filled::new(cx, "map100", FEW, 16 << 10)?,
        ];
        let value = Value::open(&cx.name("mapv"), SIZE).map_err(to_io)?;
        value.set(&[0x5a; SIZE]).map_err(to_io)?;
        let redis = if redis_installed() {
            let (server, sock) = start_redis(cx, "map")?;
            let mut hashes = Vec::new();
            for (i, n) in [KEYS, FEW].into_iter().enumerate() {
                let s = if i == 0 {
                    sock.try_clone()?
                } else {
                    server.connect()?
                };
                hashes.push(RedisHash::new(s, &format!("h{n}"), n)?);
            }
            Some((server, hashes))
        } else {
            r.skip(
                "redis (map)",
                "redis-server is not installed (apt-get install redis-server)",
            );
            None
        };
        #[cfg(not(feature = "iceoryx2"))]
        r.skip("iceoryx2 (map)", crate::NO_ICEORYX2);
        Ok(MapGroup {
            maps,
            value,
            redis,
            #[cfg(feature = "iceoryx2")]
            boards: vec![
                crate::ice::KeyBoard::new(cx, KEYS)?,
                crate::ice::KeyBoard::new(cx, FEW)?,
            ],
        })
    }
}

impl Scenario for MapGroup {
    fn entries(&self) -> io::Result<Vec<Entry<'_>>> {
        let mut v = Vec::new();
        let data = [0x3c; SIZE];
        for f in &self.maps {
            let (m, keys, n) = (&f.map, &f.keys, f.keys.len());
            let label = keys_label(n);
            let (mut a, mut b, mut c) = (cycle(n), cycle(n), cycle(n));
            if n == KEYS {
                v.push(Entry::op(
                    format!("map get, {label}"),
                    "shmem",
                    SIZE,
                    move || {
                        black_box(m.get(black_box(keys.get(a()))).map_err(to_io)?);
                        Ok(())
                    },
                ));
                v.push(Entry::op(
                    "map get_into, one hot key",
                    "shmem",
                    SIZE,
                    move || {
                        let mut buf = [0u8; SIZE];
                        black_box(
                            m.get_into(black_box(keys.get(77)), &mut buf)
                                .map_err(to_io)?,
                        );
                        Ok(())
                    },
                ));
            }
            v.push(Entry::op(
                format!("map get_into, {label}"),
                "shmem",
                SIZE,
                move || {
                    let mut buf = [0u8; SIZE];
                    black_box(
                        m.get_into(black_box(keys.get(b())), &mut buf)
                            .map_err(to_io)?,
                    );
                    Ok(())
                },
            ));
            v.push(Entry::op(
                format!("map set, {label}"),
                "shmem",
                SIZE,
                move || {
                    black_box(m.set(black_box(keys.get(c())), &data).map_err(to_io)?);
                    Ok(())
                },
            ));
        }
        let value = &self.value;
        v.push(Entry::op("get, beside the map", "shmem", SIZE, move || {
            let mut buf = [0u8; SIZE];
            black_box(value.get(black_box(&mut buf)).map_err(to_io)?);
            Ok(())
        }));
        if let Some((_, hashes)) = &self.redis {
            for h in hashes {
                let n = h.gets.len();
                let label = keys_label(n);
                let (mut a, mut b) = (cycle(n), cycle(n));
                let mut buf = [0u8; SIZE + 7];
                v.push(Entry::call(
                    format!("map get, {label}"),
                    "redis",
                    SIZE,
                    Kind::RoundTrip,
                    move || h.get(a(), &mut buf),
                ));
                v.push(Entry::call(
                    format!("map set, {label}"),
                    "redis",
                    SIZE,
                    Kind::RoundTrip,
                    move || h.set(b()),
                ));
            }
        }
        #[cfg(feature = "iceoryx2")]
        for b in &self.boards {
            v.extend(b.entries()?);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_two_sizes() {
        assert_eq!(keys_label(KEYS), "10k keys");
        assert_eq!(keys_label(FEW), "100 keys");
        let k = Keys::new(KEYS);
        assert_eq!(k.len(), KEYS);
        assert_eq!(k.get(0), b"key-00000");
        assert_eq!(k.get(KEYS - 1), key(KEYS - 1).as_bytes());
        let mut c = cycle(3);
        assert_eq!([c(), c(), c(), c()], [1, 2, 0, 1]);
    }

    /// One `HSET` fill, `HGET` and `HSET` of a field through the hand-written RESP client
    /// against a private server. Skips without `redis-server`, except under CI.
    #[test]
    fn the_redis_hash_client_round_trips_against_a_private_server() {
        if !redis_installed() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install redis-server (.ci/run)"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return;
        }
        let cx = Ctx {
            plan: crate::measure::Plan::new(crate::measure::Depth::Smoke),
            sizes: vec![SIZE],
            pid: std::process::id(),
            peer_cpu: None,
        };
        let (server, sock) = start_redis(&cx, "maptest").unwrap();
        let h = RedisHash::new(sock, "t", 3).unwrap();
        let mut buf = [0u8; SIZE + 7];
        h.get(2, &mut buf).unwrap();
        assert_eq!(&buf[5..SIZE + 5], &[b'v'; SIZE][..]);
        h.set(1).unwrap();
        let dir = server.dir().to_owned();
        drop(h);
        drop(server);
        assert!(!dir.exists(), "the server's directory is removed");
    }
}
