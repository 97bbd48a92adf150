//! The reactor on its own: messages, plain pollers, owned pollers, sleeping and waking, and
//! shutdown, with no bdev in sight.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// Counts its polls in a shared counter; reports one unit of work per poll while `busy`.
struct Counter {
    polls: Arc<AtomicU64>,
    busy: bool,
    fd: Option<RawFd>,
}

impl Poller for Counter {
    fn poll(&self) -> usize {
        self.polls.fetch_add(1, Ordering::SeqCst);
        usize::from(self.busy)
    }

    fn wake_fd(&self) -> Option<RawFd> {
        self.fd
    }
}

/// Holds one unit of work in flight until it is quiesced; records its quiesce and its drop.
struct Holder {
    held: Cell<u64>,
    quiesced: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl Poller for Holder {
    fn poll(&self) -> usize {
        0
    }

    fn inflight(&self) -> u64 {
        self.held.get()
    }

    fn quiesce(&self) {
        self.held.set(0);
        self.quiesced.store(true, Ordering::SeqCst);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn messages_run_on_the_chosen_reactor_in_order() {
    let set = ReactorSet::start(&[0], PollMode::Adaptive).unwrap();
    assert_eq!(set.call(0, current_index), Some(Some(0)));
    assert_eq!(set.call(0, current_core), Some(Some(0)));
    assert_eq!(current_index(), None, "the test thread is no reactor");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..100 {
        let seen = seen.clone();
        assert!(set.send_msg(0, move || seen.lock().unwrap().push(i)));
    }
    assert!(!set.send_msg(1, || {}), "there is no reactor 1");
    assert_eq!(set.call_all(|| 7), vec![7]);
    assert_eq!(*seen.lock().unwrap(), (0..100).collect::<Vec<_>>());
    set.stop(Duration::from_secs(1));
    assert_eq!(set.call(0, || 1), None, "a stopped reactor takes no calls");
}

#[test]
fn a_poller_runs_until_its_last_reference_drops() {
    let r = InlineReactor::new().unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let p: Rc<dyn Poller> = Rc::new(Counter {
        polls: polls.clone(),
        busy: true,
        fd: None,
    });
    assert!(register_poller(&p));
    assert_eq!(r.poll(), 1);
    assert_eq!(r.poll(), 1);
    assert_eq!(polls.load(Ordering::SeqCst), 2);
    drop(p);
    assert_eq!(r.poll(), 0);
    assert_eq!(polls.load(Ordering::SeqCst), 2);
    drop(r);
    let p: Rc<dyn Poller> = Rc::new(Counter {
        polls,
        busy: true,
        fd: None,
    });
    assert!(!register_poller(&p), "no reactor on this thread any more");
}

#[test]
fn an_owned_poller_lives_until_the_reactor_goes() {
    let r = InlineReactor::new().unwrap();
    let quiesced = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    assert!(register_owned_poller(Rc::new(Holder {
        held: Cell::new(1),
        quiesced: quiesced.clone(),
        dropped: dropped.clone(),
    })));
    for _ in 0..3 {
        r.poll();
    }
    assert!(
        !dropped.load(Ordering::SeqCst),
        "the reactor keeps it alive"
    );
    drop(r);
    assert!(dropped.load(Ordering::SeqCst));
    assert!(
        !quiesced.load(Ordering::SeqCst),
        "only a stopping reactor loop quiesces"
    );
}

/// Appends its name to a shared log on every poll.
struct Logger {
    name: &'static str,
    log: Rc<std::cell::RefCell<Vec<&'static str>>>,
}

impl Poller for Logger {
    fn poll(&self) -> usize {
        self.log.borrow_mut().push(self.name);
        0
    }
}

#[test]
fn owned_pollers_run_before_and_after_the_others() {
    let r = InlineReactor::new().unwrap();
    let log = Rc::new(std::cell::RefCell::new(Vec::new()));
    let plain: Rc<dyn Poller> = Rc::new(Logger {
        name: "plain",
        log: log.clone(),
    });
    register_poller(&plain);
    register_owned_poller(Rc::new(Logger {
        name: "owned",
        log: log.clone(),
    }));
    r.poll();
    assert_eq!(*log.borrow(), ["owned", "plain", "owned"]);
    assert_eq!(Local::with(|l| l.poller_counts()), Some((2, 0)));
}

#[test]
fn a_reactor_owns_a_few_pollers_and_refuses_more() {
    let r = InlineReactor::new().unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let owned = |polls: &Arc<AtomicU64>| -> Rc<dyn Poller> {
        Rc::new(Counter {
            polls: polls.clone(),
            busy: true,
            fd: None,
        })
    };
    for _ in 0..local::MAX_OWNED_POLLERS {
        assert!(register_owned_poller(owned(&polls)));
    }
    assert!(!register_owned_poller(owned(&polls)), "the table is full");
    assert_eq!(r.poll(), 2 * local::MAX_OWNED_POLLERS);
    assert_eq!(
        Local::with(|l| l.poller_counts()),
        Some((local::MAX_OWNED_POLLERS, 0))
    );
}

#[test]
fn a_timed_poller_runs_after_its_period() {
    let r = InlineReactor::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let seen = runs.clone();
    let p: Rc<dyn Poller> = Rc::new(TimedPoller::new(Duration::from_millis(5), move || {
        seen.set(seen.get() + 1);
        1
    }));
    register_poller(&p);
    assert_eq!(r.poll(), 0, "not due yet");
    assert!(r.poll_until(Duration::from_secs(5), || runs.get() == 1));
    assert!(p.is_timed() && p.next_deadline().is_some());
}

#[test]
fn a_sleeping_reactor_wakes_on_a_poller_fd_and_on_messages() {
    let set = ReactorSet::start(&[0], PollMode::Interrupt).unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let ev = Arc::new(wake::new_eventfd().unwrap());
    let (p2, fd) = (polls.clone(), ev.as_raw_fd());
    set.call(0, move || {
        register_owned_poller(Rc::new(Counter {
            polls: p2,
            busy: false,
            fd: Some(fd),
        }))
    });
    let r = set.reactors()[0].clone();
    wait_for("the reactor to sleep", || {
        r.in_interrupt.load(Ordering::SeqCst)
    });
    let before = polls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        polls.load(Ordering::SeqCst),
        before,
        "asleep: nothing polled"
    );
    ev.write(1).unwrap();
    wait_for("a poll after the fd fired", || {
        polls.load(Ordering::SeqCst) > before
    });
    wait_for("the reactor to sleep again", || {
        r.in_interrupt.load(Ordering::SeqCst)
    });
    assert_eq!(set.call(0, || 5), Some(5), "a message wakes it too");
    set.stop(Duration::from_secs(1));
}

#[test]
fn stop_quiesces_pollers_then_waits_for_their_work() {
    let set = ReactorSet::start(&[0], PollMode::Adaptive).unwrap();
    let quiesced = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (q, d) = (quiesced.clone(), dropped.clone());
    set.call(0, move || {
        register_owned_poller(Rc::new(Holder {
            held: Cell::new(1),
            quiesced: q,
            dropped: d,
        }))
    });
    assert_eq!(set.call(0, || Local::with(|l| l.inflight())), Some(Some(1)));
    let t = Instant::now();
    set.stop(Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "quiescing released the work"
    );
    assert!(quiesced.load(Ordering::SeqCst));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the reactor thread dropped it"
    );
}

/// Owns a duplicate of an eventfd whose original stays open elsewhere (as a vhost worker owns
/// a dup of the front-end's kick fd), and closes it when dropped.
struct DupWaker {
    fd: std::os::fd::OwnedFd,
}

impl Poller for DupWaker {
    fn poll(&self) -> usize {
        0
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

/// The descriptor numbers an epoll set watches, from `/proc/self/fdinfo` (`tfd:` lines).
fn watched_fds(epoll_fd: RawFd) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll_fd}"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("tfd:"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn a_dropped_pollers_wake_fd_leaves_no_epoll_entry_behind() {
    // A poller's wake fd may be a duplicate of a file that stays open elsewhere (a vhost
    // worker's dup of the front-end's kick fd). epoll keeps an entry for such a closed
    // descriptor and fires it under its old number, which the process may reuse for a
    // blocking socket that draining would then read from: the reactor must watch its own
    // duplicate and take it out of the set before closing it.
    let set = ReactorSet::start(&[0], PollMode::Interrupt).unwrap();
    let kick = wake::new_eventfd().unwrap();
    let dup = kick.try_clone().unwrap();
    // SAFETY: `into_raw_fd` hands over the duplicate's descriptor, owned from here on by
    // the OwnedFd alone.
    let owned =
        unsafe { std::os::fd::FromRawFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(dup)) };
    let (epoll_fd, before, during) = set
        .call(0, move || {
            let epoll_fd = Local::with(|l| l.epoll.as_raw_fd()).expect("a reactor");
            let before = watched_fds(epoll_fd);
            let p: Rc<dyn Poller> = Rc::new(DupWaker { fd: owned });
            assert!(register_poller(&p));
            let during = watched_fds(epoll_fd);
            // The poller dies at once; its duplicate closes with it.
            drop(p);
            (epoll_fd, before, during)
        })
        .expect("ran on reactor 0");
    assert_eq!(
        during.len(),
        before.len() + 1,
        "the poller is watched: {during:?}"
    );
    // Let the reactor notice the dead poller, then fire the file it watched.
    assert_eq!(set.call(0, || 1), Some(1));
    kick.write(1).unwrap();
    assert_eq!(set.call(0, || 1), Some(1));
    let after = set
        .call(0, move || watched_fds(epoll_fd))
        .expect("ran on reactor 0");
    assert_eq!(
        after, before,
        "an epoll entry outlived its poller (it would fire under a reusable fd number)"
    );
}
