mod devcache;
mod mitm;
mod ops;
mod proxy;
mod store;
