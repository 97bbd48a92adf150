//! The method table: RPC names mapped to handlers, each tagged with the framework states in
//! which it may be called (SPDK's `SPDK_RPC_STARTUP` / `SPDK_RPC_RUNTIME`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::api::{serve, RpcMethod};
use crate::jsonrpc::RpcError;

/// Framework state: before `framework_start_init` (startup) or after it (runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcState {
    /// `--wait-for-rpc`: subsystems are not initialised yet.
    Startup,
    /// Normal operation.
    Runtime,
}

/// The signature every method handler has.
pub type MethodFn = Arc<dyn Fn(Option<Value>) -> Result<Value, RpcError> + Send + Sync>;

/// One registered method.
#[derive(Clone)]
pub struct Method {
    /// Callable before `framework_start_init`.
    pub startup: bool,
    /// Callable after `framework_start_init`.
    pub runtime: bool,
    /// The handler.
    pub handler: MethodFn,
}

/// RPC names mapped to handlers.
#[derive(Clone, Default)]
pub struct MethodTable {
    methods: BTreeMap<String, Method>,
}

impl MethodTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a method callable only at runtime (the common case).
    pub fn runtime<F>(&mut self, name: &str, f: F)
    where
        F: Fn(Option<Value>) -> Result<Value, RpcError> + Send + Sync + 'static,
    {
        self.insert(name, false, true, f);
    }

    /// Registers a method callable in both states.
    pub fn always<F>(&mut self, name: &str, f: F)
    where
        F: Fn(Option<Value>) -> Result<Value, RpcError> + Send + Sync + 'static,
    {
        self.insert(name, true, true, f);
    }

    /// Registers a method with explicit state flags.
    pub fn insert<F>(&mut self, name: &str, startup: bool, runtime: bool, f: F)
    where
        F: Fn(Option<Value>) -> Result<Value, RpcError> + Send + Sync + 'static,
    {
        self.methods.insert(
            name.to_string(),
            Method {
                startup,
                runtime,
                handler: Arc::new(f),
            },
        );
    }

    /// Registers the typed method `M`: its params are parsed as `M::Params` (a failure is
    /// -32602 naming the field) and its result serialised. `startup` and `runtime` say in which
    /// states it may be called, as for [`MethodTable::insert`].
    pub fn typed<M, F>(&mut self, startup: bool, runtime: bool, f: F)
    where
        M: RpcMethod,
        F: Fn(M::Params) -> Result<M::Result, RpcError> + Send + Sync + 'static,
    {
        self.insert(M::METHOD, startup, runtime, move |p| serve::<M>(p, &f));
    }

    /// Registers the typed method `M`, callable only at runtime (the common case).
    pub fn runtime_typed<M, F>(&mut self, f: F)
    where
        M: RpcMethod,
        F: Fn(M::Params) -> Result<M::Result, RpcError> + Send + Sync + 'static,
    {
        self.typed::<M, F>(false, true, f);
    }

    /// Registers the typed method `M`, callable in both states.
    pub fn always_typed<M, F>(&mut self, f: F)
    where
        M: RpcMethod,
        F: Fn(M::Params) -> Result<M::Result, RpcError> + Send + Sync + 'static,
    {
        self.typed::<M, F>(true, true, f);
    }

    /// Looks a method up by name.
    pub fn get(&self, name: &str) -> Option<&Method> {
        self.methods.get(name)
    }

    /// Names of all methods, or only those callable in `state`.
    pub fn names(&self, state: Option<RpcState>) -> Vec<String> {
        self.methods
            .iter()
            .filter(|(_, m)| match state {
                None => true,
                Some(RpcState::Startup) => m.startup,
                Some(RpcState::Runtime) => m.runtime,
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}
