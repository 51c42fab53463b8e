//! Self-test of the fault-injecting proxy (`kiln_integration::faultproxy`) against
//! the harness registry, with the harness's own HTTP client. No kiln binary needed:
//! `cargo test -p kiln-integration --test cache_faultproxy`.

use std::time::{Duration, Instant};

use kiln_integration::faultproxy::{Fault, FaultProxy, Rule};
use kiln_integration::{http, Registry};

#[test]
fn relays_and_injects_faults() {
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.host());
    let host = proxy.host();

    // Relayed untouched.
    let r = http::get(&host, "/v2/", &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // 503 once, then through again.
    proxy.add_rule(Rule::new("GET", "/v2/", Fault::Status(503), 1));
    assert_eq!(http::get(&host, "/v2/", &[]).unwrap().status, 503);
    assert_eq!(http::get(&host, "/v2/", &[]).unwrap().status, 200);

    // `after`: the first matching request passes, the second is faulted.
    proxy.add_rule(Rule::new("*", "/v2/_catalog", Fault::Status(429), 1).after(1));
    assert_eq!(http::get(&host, "/v2/_catalog", &[]).unwrap().status, 200);
    assert_eq!(http::get(&host, "/v2/_catalog", &[]).unwrap().status, 429);

    // Closed without an answer; cut after a few bytes of the response.
    proxy.add_rule(Rule::new("GET", "/v2/", Fault::Close, 1));
    assert!(http::get(&host, "/v2/", &[]).is_err());
    proxy.add_rule(Rule::new("GET", "/v2/", Fault::DropResponseAfter(12), 1));
    assert!(http::get(&host, "/v2/", &[]).is_err(), "a 12-byte response cannot parse");

    // A corrupted body byte: `{}` becomes something else.
    proxy.add_rule(Rule::new("GET", "/v2/", Fault::CorruptResponseBody(0), 1));
    let r = http::get(&host, "/v2/", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(r.text(), "{}");
    assert_eq!(http::get(&host, "/v2/", &[]).unwrap().text(), "{}");

    // Delay.
    proxy.add_rule(Rule::new("GET", "/v2/", Fault::DelayMs(300), 1));
    let start = Instant::now();
    assert_eq!(http::get(&host, "/v2/", &[]).unwrap().status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));

    assert_eq!(proxy.injected(), 6, "{:#?}", proxy.log());
    assert!(proxy.log().iter().any(|l| l.contains("[fault: Status(503)]")), "{:#?}", proxy.log());
    assert!(proxy.connections() >= 10);
}
