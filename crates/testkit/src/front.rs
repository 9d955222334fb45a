//! The listening socket: accepts connections, numbers and counts them, drops
//! the ones a test asked to drop, and goes down (closes the listener, so
//! connects are refused) and up again on the same port.

use crate::shared::lock;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// How long `set_down` waits for the accept thread to follow.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep retrying to bind the port again after being down.
const REBIND_ATTEMPTS: u32 = 200;
const REBIND_PAUSE: Duration = Duration::from_millis(25);

/// Handle on the accept thread.
pub(crate) struct Front {
    port: u16,
    control: Arc<Control>,
}

struct Control {
    state: Mutex<State>,
    /// Signalled on every change of `state`.
    changed: Condvar,
    accepted: AtomicUsize,
    /// Open connections, so that going down or stopping can cut them.
    live: Mutex<HashMap<u64, TcpStream>>,
}

#[derive(Default)]
struct State {
    down: bool,
    stop: bool,
    listening: bool,
    drop_next: usize,
    rebind_error: Option<String>,
}

impl Front {
    /// Binds 127.0.0.1:0 and starts accepting; `serve` runs each kept
    /// connection on its own thread with the connection's id (1, 2, ...).
    ///
    /// # Panics
    /// If the port cannot be bound or the thread cannot be started.
    pub(crate) fn start<F>(serve: F) -> Front
    where
        F: Fn(TcpStream, u64) + Send + Sync + 'static,
    {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind fake Postmark on 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let control = Arc::new(Control {
            state: Mutex::new(State {
                listening: true,
                ..State::default()
            }),
            changed: Condvar::new(),
            accepted: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
        });
        let ctl = Arc::clone(&control);
        thread::Builder::new()
            .name(format!("fake-postmark-{port}"))
            .spawn(move || accept_loop(listener, port, &ctl, Arc::new(serve)))
            .expect("spawn accept thread");
        Front { port, control }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn connections(&self) -> usize {
        self.control.accepted.load(Ordering::SeqCst)
    }

    pub(crate) fn drop_next_connections(&self, n: usize) {
        lock(&self.control.state).drop_next += n;
    }

    /// Goes down (listener closed, open connections cut) or up again.
    ///
    /// # Panics
    /// If the port cannot be bound again, or the accept thread does not
    /// follow within a few seconds.
    pub(crate) fn set_down(&self, down: bool) {
        {
            let mut state = lock(&self.control.state);
            if state.down == down {
                return;
            }
            state.down = down;
            state.rebind_error = None;
        }
        self.control.changed.notify_all();
        if down {
            wake(self.port);
            self.control.cut_all();
        }
        let state = lock(&self.control.state);
        let (state, _) = self
            .control
            .changed
            .wait_timeout_while(state, SWITCH_TIMEOUT, |s| {
                s.listening == down && s.rebind_error.is_none()
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(err) = &state.rebind_error {
            panic!(
                "fake Postmark could not listen on port {} again: {err}",
                self.port
            );
        }
        assert!(
            state.listening != down,
            "fake Postmark accept thread did not switch within {SWITCH_TIMEOUT:?}"
        );
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        lock(&self.control.state).stop = true;
        self.control.changed.notify_all();
        wake(self.port);
        self.control.cut_all();
    }
}

impl Control {
    fn set_listening(&self, listening: bool) {
        lock(&self.state).listening = listening;
        self.changed.notify_all();
    }

    fn cut_all(&self) {
        for stream in lock(&self.live).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Unblocks the accept thread so it notices a state change.
fn wake(port: u16) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
}

type Serve = Arc<dyn Fn(TcpStream, u64) + Send + Sync>;

fn accept_loop(first: TcpListener, port: u16, control: &Arc<Control>, serve: Serve) {
    let mut next = Some(first);
    loop {
        let listener = match next.take() {
            Some(listener) => listener,
            None => match wait_up_and_bind(port, control) {
                Some(listener) => listener,
                None => return,
            },
        };
        for stream in listener.incoming() {
            let Ok(stream) = stream else {
                // e.g. out of file descriptors: do not spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let mut state = lock(&control.state);
            if state.stop || state.down {
                break;
            }
            let id = control.accepted.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            if state.drop_next > 0 {
                state.drop_next -= 1;
                continue; // closed without a greeting
            }
            drop(state);
            spawn_connection(stream, id, control, &serve);
        }
        drop(listener);
        control.set_listening(false);
        if lock(&control.state).stop {
            return;
        }
    }
}

/// Waits while down; then binds the same port again. `None` means stop.
fn wait_up_and_bind(port: u16, control: &Control) -> Option<TcpListener> {
    let state = lock(&control.state);
    let state = control
        .changed
        .wait_while(state, |s| s.down && !s.stop)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if state.stop {
        return None;
    }
    drop(state);
    let mut last_err = None;
    for _ in 0..REBIND_ATTEMPTS {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(listener) => {
                control.set_listening(true);
                return Some(listener);
            }
            Err(e) => last_err = Some(e),
        }
        thread::sleep(REBIND_PAUSE);
    }
    lock(&control.state).rebind_error = last_err.map(|e| e.to_string());
    control.changed.notify_all();
    None
}

fn spawn_connection(stream: TcpStream, id: u64, control: &Arc<Control>, serve: &Serve) {
    if let Ok(clone) = stream.try_clone() {
        lock(&control.live).insert(id, clone);
    }
    let ctl = Arc::clone(control);
    let serve = Arc::clone(serve);
    let spawned = thread::Builder::new()
        .name(format!("fake-postmark-conn-{id}"))
        .spawn(move || {
            serve(stream, id);
            lock(&ctl.live).remove(&id);
        });
    if spawned.is_err() {
        // No thread to serve it: the stream went down with the closure.
        lock(&control.live).remove(&id);
    }
}
