//! Client routes: where each client's replies go.
//!
//! Two ways, the first on the hot path:
//! - **Reply tokens** ([`ReplyToken`]): a request read on this loop is handed to the core
//!   with a token naming its connection (slot and the slot's generation) and its arrival
//!   time; the core keeps it with the request and returns it in the reply's
//!   `Effect::Reply`, so the reply is written to that connection, if it is still the same
//!   one, without looking the client up. No map is probed for such a request or reply.
//! - **The route table** ([`ClientRoutes`]): the connection of each client's latest
//!   request that may be answered without a token, and when it arrived. It is written for
//!   the requests whose reply may come back without one: registrations, backup reads, requests
//!   reaching a replica that is not the primary (the retries a client sends everyone; if
//!   the view changes, the new primary answers the ops it inherited from them), requests
//!   that got no token (from an I/O thread's connection, or a slot past `u16::MAX`); and
//!   it is read for every reply without a token, or whose token's connection is gone.
//!
//! The table is bounded: when it is full, routes to closed connections are forgotten
//! first, and a client that still finds no room is served but its reply is not routed
//! (its retry is answered from the client table).

use crate::protocol::client_table::{ClientMap, RouteToken};
use crate::protocol::{ClientId, RequestNumber};
use std::time::{Duration, Instant};

/// Where a client's replies go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Connection `token` of the event loop, while its id is `connection_id` (tokens are
    /// reused, ids never are).
    Local {
        /// The connection's token.
        token: usize,
        /// The connection's id.
        connection_id: u64,
    },
    /// A connection of I/O thread `io`.
    Io {
        /// The I/O thread.
        io: u8,
        /// The connection's id.
        connection_id: u64,
    },
}

/// What the loop keeps per client, packed into 24 bytes (32 with its key): the table is
/// probed twice per operation (request, reply) at random client ids, so its footprint
/// decides how many of those probes miss the cache. Unpacked, with an `Instant`, an entry
/// was 56 bytes, and the table was sized for every possible client up front.
#[derive(Clone, Copy, Debug)]
struct ClientRoute {
    /// The connection's id (never reused).
    connection_id: u64,
    /// The connection's token on the loop, or the I/O thread's index (`io` set).
    slot: u32,
    /// The request in flight, while `timing`.
    request: RequestNumber,
    /// When it arrived: microseconds since `ClientRoutes::epoch`, modulo 2^32 (a wait
    /// longer than 71 minutes would be measured wrong, never one a client waits for).
    arrived_us: u32,
    /// `slot` is an I/O thread.
    io: bool,
    /// `request` and `arrived_us` are set: the request in flight has not been answered.
    timing: bool,
}

impl ClientRoute {
    fn route(&self) -> Route {
        if self.io {
            Route::Io {
                io: self.slot as u8,
                connection_id: self.connection_id,
            }
        } else {
            Route::Local {
                token: self.slot as usize,
                connection_id: self.connection_id,
            }
        }
    }

    fn set_route(&mut self, route: Route) {
        (self.slot, self.connection_id, self.io) = match route {
            Route::Local {
                token,
                connection_id,
            } => {
                let token = u32::try_from(token).expect("tokens are slab indices");
                (token, connection_id, false)
            }
            Route::Io { io, connection_id } => (u32::from(io), connection_id, true),
        };
    }
}

/// What the runtime hands the core with a request read on its own loop (the core's opaque
/// [`RouteToken`]): the connection's slot (16 bits), the slot's generation (16 bits, see
/// `ConnectionSet::generation`) and the request's arrival in `ClientRoutes`'s microseconds
/// (32 bits, for the request-to-commit histogram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyToken {
    /// The connection's slot (its mio token).
    pub slot: usize,
    /// The slot's generation when the request was read.
    pub generation: u16,
    /// When the request arrived, as `ClientRoutes::micros` counts.
    pub arrived_us: u32,
}

impl ReplyToken {
    /// The token as the core keeps it; `None` for a slot beyond 16 bits.
    pub fn pack(self) -> Option<RouteToken> {
        let slot = u16::try_from(self.slot).ok()?;
        Some(RouteToken(
            u64::from(self.arrived_us) << 32 | u64::from(self.generation) << 16 | u64::from(slot),
        ))
    }

    /// The token the core returned.
    pub fn unpack(token: RouteToken) -> ReplyToken {
        ReplyToken {
            slot: (token.0 & 0xFFFF) as usize,
            generation: (token.0 >> 16) as u16,
            arrived_us: (token.0 >> 32) as u32,
        }
    }

    /// How long the request waited, at `now_us` (`ClientRoutes::micros`).
    pub fn waited_us(self, now_us: u32) -> u64 {
        u64::from(now_us.wrapping_sub(self.arrived_us))
    }
}

/// Routes start with room for this many clients and grow as clients come (growing
/// allocates; the steady state does not).
const ROUTES_INITIAL: usize = 1024;

/// The routes of every client with a recent request, at most `routes_max`.
#[derive(Debug)]
pub struct ClientRoutes {
    routes: ClientMap<ClientRoute>,
    routes_max: usize,
    /// The origin of `arrived_us`.
    epoch: Instant,
    /// The last instant converted by `micros`, and its value: the loop reads its clock
    /// once per phase, so hundreds of requests and replies in a row ask for the same one
    /// (a `Duration` subtraction and a 128-bit conversion each, 1% of the primary).
    last: (Instant, u32),
}

impl ClientRoutes {
    /// Routes for at most `routes_max` clients.
    pub fn new(routes_max: usize) -> ClientRoutes {
        assert!(routes_max > 0, "at least one route");
        let epoch = Instant::now();
        ClientRoutes {
            routes: ClientMap::with_capacity_and_hasher(
                routes_max.min(ROUTES_INITIAL),
                Default::default(),
            ),
            routes_max,
            epoch,
            last: (epoch, 0),
        }
    }

    /// The most clients routed at once.
    pub fn routes_max(&self) -> usize {
        self.routes_max
    }

    /// `now` as `arrived_us` (and a reply token's arrival) counts it.
    pub fn micros(&mut self, now: Instant) -> u32 {
        if now != self.last.0 {
            let micros = now.saturating_duration_since(self.epoch).as_micros() as u32;
            self.last = (now, micros);
        }
        self.last.1
    }

    /// Notes that request `number` of `client` arrived on `route` at `now`; returns
    /// false if there was no room for a new client. When full, routes to connections that
    /// `is_live` says are gone are forgotten first (a route to an I/O thread's connection
    /// cannot be checked from here and is dropped too: the client's next request routes it
    /// again). A retry keeps the first arrival time of its request number.
    pub fn on_request(
        &mut self,
        client: ClientId,
        number: RequestNumber,
        route: Route,
        now: Instant,
        is_live: impl Fn(usize, u64) -> bool,
    ) -> bool {
        let arrived_us = self.micros(now);
        if let Some(known) = self.routes.get_mut(&client) {
            known.set_route(route);
            if !(known.timing && known.request == number) {
                (known.request, known.arrived_us, known.timing) = (number, arrived_us, true);
            }
            return true;
        }
        if self.routes.len() >= self.routes_max {
            self.routes.retain(|_, known| match known.route() {
                Route::Local {
                    token,
                    connection_id,
                } => is_live(token, connection_id),
                Route::Io { .. } => false,
            });
            if self.routes.len() >= self.routes_max {
                return false;
            }
        }
        let mut known = ClientRoute {
            connection_id: 0,
            slot: 0,
            request: number,
            arrived_us,
            io: false,
            timing: true,
        };
        known.set_route(route);
        self.routes.insert(client, known);
        assert!(self.routes.len() <= self.routes_max);
        true
    }

    /// Where `client`'s reply goes; when it answers `request`, the request in flight,
    /// also how long that request waited since it arrived (measured once: a second reply
    /// to it is not measured again).
    pub fn on_reply(
        &mut self,
        client: ClientId,
        request: Option<RequestNumber>,
        now: Instant,
    ) -> Option<(Route, Option<Duration>)> {
        let now_us = self.micros(now);
        let known = self.routes.get_mut(&client)?;
        let mut waited = None;
        if known.timing && request == Some(known.request) {
            known.timing = false;
            let waited_us = now_us.wrapping_sub(known.arrived_us);
            waited = Some(Duration::from_micros(u64::from(waited_us)));
        }
        Some((known.route(), waited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Route = Route::Local {
        token: 1,
        connection_id: 10,
    };
    const IO: Route = Route::Io {
        io: 0,
        connection_id: 11,
    };

    fn live(_: usize, _: u64) -> bool {
        true
    }

    #[test]
    fn a_reply_token_round_trips_and_only_for_16_bit_slots() {
        let token = ReplyToken {
            slot: 65_535,
            generation: 7,
            arrived_us: u32::MAX - 1,
        };
        assert_eq!(ReplyToken::unpack(token.pack().unwrap()), token);
        assert_eq!(token.waited_us(2), 4, "the clock wraps");
        let wide = ReplyToken {
            slot: 65_536,
            ..token
        };
        assert_eq!(wide.pack(), None);
    }

    #[test]
    fn a_reply_follows_the_latest_request_and_is_timed_once() {
        // Routes count time from their creation: `start` follows it.
        let mut routes = ClientRoutes::new(4);
        let start = Instant::now();
        assert!(routes.on_request(7, 1, LOCAL, start, live));
        // A retry on another connection moves the route and keeps the first arrival.
        let later = start + Duration::from_millis(3);
        assert!(routes.on_request(7, 1, IO, later, live));
        let end = start + Duration::from_millis(5);
        assert_eq!(
            routes.on_reply(7, Some(1), end),
            Some((IO, Some(Duration::from_millis(5))))
        );
        assert_eq!(routes.on_reply(7, Some(1), end), Some((IO, None)));
        // A reply to an older request is routed but not timed.
        assert!(routes.on_request(7, 2, LOCAL, end, live));
        assert_eq!(routes.on_reply(7, Some(1), end), Some((LOCAL, None)));
        assert_eq!(routes.on_reply(8, Some(1), end), None, "unknown client");
    }

    #[test]
    fn a_full_table_forgets_closed_connections_first() {
        let now = Instant::now();
        let mut routes = ClientRoutes::new(2);
        let on = |token| Route::Local {
            token,
            connection_id: token as u64,
        };
        assert!(routes.on_request(1, 1, on(1), now, live));
        assert!(routes.on_request(2, 1, on(2), now, live));
        let all_live = routes.on_request(3, 1, on(3), now, live);
        assert!(!all_live, "no room while every route is live");
        assert!(
            routes.on_request(2, 2, on(2), now, live),
            "a known client has room"
        );
        let one_closed = |token: usize, _| token != 1;
        assert!(routes.on_request(3, 1, on(3), now, one_closed));
        assert_eq!(routes.on_reply(1, None, now), None);
        assert_eq!(routes.on_reply(3, None, now), Some((on(3), None)));
    }

    #[test]
    fn a_full_table_drops_io_routes() {
        let now = Instant::now();
        let mut routes = ClientRoutes::new(1);
        assert!(routes.on_request(1, 1, IO, now, live));
        assert!(routes.on_request(2, 1, LOCAL, now, live));
        assert_eq!(routes.on_reply(1, None, now), None);
    }
}
