mod devcache;
mod ops;
mod props;
mod proxy;
mod reliability;
mod store;
