mod mitm;
mod proxy;
mod store;
