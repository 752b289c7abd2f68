mod devcache;
mod ops;
mod proxy;
mod store;
