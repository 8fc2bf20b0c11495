//! Generated host bindings of the `honeydew:plugin/plugin` world (`wit/plugin.wit`).
//!
//! Only `bindgen!` output lives here. The WASI interfaces the world imports are
//! provided by wasmtime-wasi, wasmtime-wasi-http and wasmtime-wasi-config (see
//! `engine`), so their generated types are mapped to those crates' own. The world's
//! own imports (`honeydew:plugin/workspace` and `honeydew:plugin/job` since 0.2.0) are
//! async host functions,
//! implemented on the store's data in `sandbox` and linked one interface at a time in
//! `engine`: a new interface of the contract adds a line there and an impl, nothing
//! here.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "honeydew:plugin/plugin",
    imports: { "honeydew:plugin": async },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
});
