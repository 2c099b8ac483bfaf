//! Spin's route syntax and the routing table built from `[[trigger.http]]` once per manifest.
//!
//! | route | matches |
//! |---|---|
//! | `/users` | exactly `/users` (a trailing slash is ignored) |
//! | `/users/:id` | one segment per `:name`, captured |
//! | `/users/...` | `/users` and everything below it |
//! | `/...` | everything |
//! | `{ private = true }` | nothing from outside: reachable only by service chaining |
//!
//! When several routes match, Spin's precedence picks one: the leftmost segment where they
//! differ decides (literal over `:param` over `...`), and `/a` beats `/a/...`. Equal routes
//! are refused when the manifest loads.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    segments: Vec<Segment>,
    wildcard: bool,
    private: bool,
}

impl RoutePattern {
    pub fn parse(route: &str) -> Result<RoutePattern, String> {
        let Some(rest) = route.strip_prefix('/') else {
            return Err(format!("route `{route}` must start with `/`"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = Vec::new();
        let mut wildcard = false;
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                if *part == "..." {
                    if i + 1 != parts.len() {
                        return Err(format!("route `{route}`: `...` may only end a route"));
                    }
                    wildcard = true;
                } else if let Some(name) = part.strip_prefix(':') {
                    if name.is_empty() {
                        return Err(format!("route `{route}`: `:` must be followed by a name"));
                    }
                    segments.push(Segment::Param(name.to_owned()));
                } else if part.is_empty() {
                    return Err(format!("route `{route}` has an empty segment (`//`)"));
                } else if part.contains(['?', '#', '*']) {
                    return Err(format!(
                        "route `{route}`: `{part}` is not a path segment (use `:name` or a trailing `/...`)"
                    ));
                } else {
                    segments.push(Segment::Literal((*part).to_owned()));
                }
            }
        }
        Ok(RoutePattern {
            segments,
            wildcard,
            private: false,
        })
    }

    /// `route = { private = true }`.
    pub fn private() -> RoutePattern {
        RoutePattern {
            segments: Vec::new(),
            wildcard: true,
            private: true,
        }
    }

    pub fn is_private(&self) -> bool {
        self.private
    }

    /// Matches a request path (without query). Returns the captured parameters and the part
    /// of the path below a wildcard route.
    pub fn matches<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a>> {
        if self.private {
            return None;
        }
        if !path.starts_with('/') {
            return None;
        }
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let inner = &path[1..];
        let mut parts = (!inner.is_empty())
            .then(|| inner.split('/'))
            .into_iter()
            .flatten();
        let mut params = Vec::new();
        let mut consumed = 0usize;
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
                Segment::Param(_) => return None,
            }
            consumed += 1 + part.len();
        }
        let rest = &path[consumed..];
        if self.wildcard {
            Some(RouteMatch {
                params,
                path_info: rest,
            })
        } else if parts.next().is_none() {
            Some(RouteMatch {
                params,
                path_info: "",
            })
        } else {
            None
        }
    }

    /// Spin's precedence: the leftmost segment where two routes differ decides (a literal
    /// beats a parameter, which beats a wildcard); if one route is a prefix of the other, the
    /// shorter wins, so `/one` beats `/one/...`.
    fn precedence(&self, other: &RoutePattern) -> std::cmp::Ordering {
        fn ranks(p: &RoutePattern) -> impl Iterator<Item = u8> + '_ {
            p.segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(_) => 2,
                    Segment::Param(_) => 1,
                })
                .chain(p.wildcard.then_some(0))
        }
        ranks(other)
            .zip(ranks(self))
            .map(|(theirs, ours)| theirs.cmp(&ours))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| ranks(self).count().cmp(&ranks(other).count()))
    }

    /// The part of the route before any wildcard, as Spin's `spin-component-route` header.
    pub fn base(&self) -> String {
        let mut s = String::new();
        for seg in &self.segments {
            s.push('/');
            match seg {
                Segment::Literal(l) => s.push_str(l),
                Segment::Param(p) => {
                    s.push(':');
                    s.push_str(p);
                }
            }
        }
        s
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.private {
            return f.write_str("{ private = true }");
        }
        let base = self.base();
        match (base.is_empty(), self.wildcard) {
            (true, true) => f.write_str("/..."),
            (true, false) => f.write_str("/"),
            (false, true) => write!(f, "{base}/..."),
            (false, false) => f.write_str(&base),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch<'p> {
    pub params: Vec<(&'p str, &'p str)>,
    /// The rest of the path below a wildcard route (`/v1/x` for `/api/...` on `/api/v1/x`).
    pub path_info: &'p str,
}

/// Every public route of the app, most specific first.
#[derive(Debug, Default)]
pub struct Router<T> {
    routes: Vec<(RoutePattern, T)>,
}

impl<T> Router<T> {
    pub fn new(routes: impl IntoIterator<Item = (RoutePattern, T)>) -> Router<T> {
        let mut routes: Vec<_> = routes.into_iter().filter(|(p, _)| !p.private).collect();
        // A stable sort keeps manifest order among routes of equal specificity.
        routes.sort_by(|(a, _), (b, _)| a.precedence(b));
        Router { routes }
    }

    pub fn route<'a>(&'a self, path: &'a str) -> Option<(&'a RoutePattern, &'a T, RouteMatch<'a>)> {
        self.routes
            .iter()
            .find_map(|(pattern, target)| pattern.matches(path).map(|m| (pattern, target, m)))
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    #[test]
    fn exact_route_matches_only_its_path_with_or_without_trailing_slash() {
        let r = p("/api/v1/users/register");
        assert!(r.matches("/api/v1/users/register").is_some());
        assert!(r.matches("/api/v1/users/register/").is_some());
        assert!(r.matches("/api/v1/users").is_none());
        assert!(r.matches("/api/v1/users/register/x").is_none());
    }

    #[test]
    fn wildcard_route_matches_its_base_and_everything_below() {
        let r = p("/api/v1/orders/...");
        assert_eq!(r.matches("/api/v1/orders").unwrap().path_info, "");
        assert_eq!(
            r.matches("/api/v1/orders/42/cancel").unwrap().path_info,
            "/42/cancel"
        );
        assert!(r.matches("/api/v1/ordersx").is_none());
        assert!(r.matches("/api/v1").is_none());
    }

    #[test]
    fn root_wildcard_matches_everything() {
        let r = p("/...");
        assert_eq!(r.matches("/").unwrap().path_info, "/");
        assert_eq!(r.matches("/a/b").unwrap().path_info, "/a/b");
    }

    #[test]
    fn params_capture_one_non_empty_segment() {
        let r = p("/users/:id/orders/:order");
        let m = r.matches("/users/7/orders/9").unwrap();
        assert_eq!(m.params, vec![("id", "7"), ("order", "9")]);
        assert!(r.matches("/users//orders/9").is_none());
        assert!(r.matches("/users/7/orders").is_none());
    }

    #[test]
    fn bad_routes_are_refused_with_the_reason() {
        for (route, why) in [
            ("users", "start with `/`"),
            ("/a/.../b", "may only end"),
            ("/a//b", "empty segment"),
            ("/a/:", "followed by a name"),
            ("/a/*", "not a path segment"),
        ] {
            let err = RoutePattern::parse(route).unwrap_err();
            assert!(err.contains(why), "{route}: {err}");
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let router = Router::new([
            (p("/..."), "fallback"),
            (p("/api/v1/users/..."), "users"),
            (p("/api/v1/users/login"), "login"),
            (p("/api/v1/users/:id"), "user-by-id"),
            (p("/api/..."), "api"),
        ]);
        let target = |path| *router.route(path).unwrap().1;
        assert_eq!(target("/api/v1/users/login"), "login");
        assert_eq!(target("/api/v1/users/42"), "user-by-id");
        assert_eq!(target("/api/v1/users/42/avatar"), "users");
        assert_eq!(target("/api/v1/users"), "users");
        assert_eq!(target("/api/v2"), "api");
        assert_eq!(target("/index.html"), "fallback");
    }

    #[test]
    fn leftmost_difference_decides_like_spin() {
        let router = Router::new([(p("/:a/b"), "param"), (p("/x/..."), "literal")]);
        assert_eq!(*router.route("/x/b").unwrap().1, "literal");
        let router = Router::new([(p("/one/..."), "wild"), (p("/one"), "exact")]);
        assert_eq!(*router.route("/one").unwrap().1, "exact");
        assert_eq!(*router.route("/one/two").unwrap().1, "wild");
    }

    #[test]
    fn private_routes_are_never_matched_from_outside() {
        let router = Router::new([(RoutePattern::private(), "provider")]);
        assert!(router.route("/").is_none());
        assert!(router.is_empty());
    }

    #[test]
    fn display_round_trips() {
        for route in ["/", "/...", "/a/:b/...", "/a/b"] {
            assert_eq!(p(route).to_string(), route);
        }
    }
}
