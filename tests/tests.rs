mod devcache;
mod proxy;
mod store;
