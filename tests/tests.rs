mod proxy;
mod store;
