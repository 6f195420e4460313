//! The catalog's use cases and tenant rules.

use std::time::Duration;

use surge_domain::catalog::{CatalogError, CreateProduct, PageRequest, ProductName, ProductPatch, Sku, Stock};
use surge_domain::{Actor, Cents, Clock, MerchantId, ProductId};

use crate::world::{World, admin, customer, key_of, merchant};

fn request(sku: &str, merchant_id: Option<i64>) -> CreateProduct {
    CreateProduct {
        merchant_id: merchant_id.map(MerchantId::new),
        sku: Sku::parse(sku).expect("sku"),
        name: ProductName::parse("Green tea").expect("name"),
        price_cents: Cents::parse("price_cents", 500).expect("price"),
        stock: Stock::parse(20).expect("stock"),
    }
}

fn rename(name: &str) -> ProductPatch {
    ProductPatch::parse(Some(ProductName::parse(name).expect("name")), None).expect("patch")
}

#[tokio::test]
async fn a_merchant_creates_a_product_of_its_own_stamped_by_the_clock() {
    let world = World::new();
    let product = world.catalog.create(&merchant(3), request("TEA-1", None), None).await.expect("created");
    assert_eq!(product.merchant_id, MerchantId::new(3), "a merchant's product is its own");
    assert_eq!((product.sku.as_str(), product.name.as_str()), ("TEA-1", "Green tea"));
    assert_eq!((product.price_cents.get(), product.stock.get()), (500, 20));
    assert_eq!(product.updated_at, world.clock.now());
    assert_eq!(*world.catalog.get(product.id).await.expect("read back"), product);
}

#[tokio::test]
async fn only_merchants_for_themselves_and_admins_for_a_named_merchant_create_products() {
    let world = World::new();
    let refused = world.catalog.create(&customer(1), request("A", None), None).await;
    assert!(matches!(refused, Err(CatalogError::Forbidden(_))), "{refused:?}");
    let refused = world.catalog.create(&merchant(3), request("A", Some(4)), None).await;
    assert!(matches!(refused, Err(CatalogError::Forbidden(_))), "{refused:?}");
    let refused = world.catalog.create(&admin(), request("A", None), None).await;
    assert!(matches!(refused, Err(CatalogError::Invalid(_))), "an admin must name the merchant: {refused:?}");
    assert_eq!(world.products.len(), 0, "nothing refused was written");

    let own = world.catalog.create(&merchant(3), request("A", Some(3)), None).await.expect("own merchant named");
    let by_admin = world.catalog.create(&admin(), request("B", Some(4)), None).await.expect("admin");
    assert_eq!((own.merchant_id, by_admin.merchant_id), (MerchantId::new(3), MerchantId::new(4)));
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_product() {
    let world = World::new();
    let first = world.catalog.create(&merchant(3), request("A", None), Some(&key_of("k1"))).await.expect("first");
    let again = world.catalog.create(&merchant(3), request("A", None), Some(&key_of("k1"))).await.expect("repeat");
    assert_eq!(again, first);
    assert_eq!(world.products.len(), 1);
    // Keys are per merchant: another merchant's "k1" is another product.
    let other = world.catalog.create(&merchant(4), request("A", None), Some(&key_of("k1"))).await.expect("other");
    assert_ne!(other.id, first.id);
}

#[tokio::test]
async fn a_taken_sku_is_refused_per_merchant() {
    let world = World::new();
    world.catalog.create(&merchant(3), request("A", None), None).await.expect("first");
    let twin = world.catalog.create(&merchant(3), request("A", None), None).await;
    assert_eq!(twin, Err(CatalogError::DuplicateSku));
    world.catalog.create(&merchant(4), request("A", None), None).await.expect("another merchant's sku is free");
}

#[tokio::test]
async fn only_the_owner_or_an_admin_changes_a_product_and_the_change_is_stamped() {
    let world = World::new();
    let product = world.catalog.create(&merchant(3), request("A", None), None).await.expect("created");
    for outsider in [merchant(4), customer(3)] {
        let refused = world.catalog.patch(&outsider, product.id, rename("Stolen")).await;
        assert!(matches!(refused, Err(CatalogError::Forbidden(_))), "{outsider:?}: {refused:?}");
        let refused = world.catalog.set_stock(&outsider, product.id, Stock::parse(0).expect("stock")).await;
        assert!(matches!(refused, Err(CatalogError::Forbidden(_))), "{outsider:?}: {refused:?}");
    }

    world.clock.advance(Duration::from_secs(90));
    let renamed = world.catalog.patch(&merchant(3), product.id, rename("Black tea")).await.expect("owner");
    assert_eq!((renamed.name.as_str(), renamed.price_cents), ("Black tea", product.price_cents));
    assert_eq!(renamed.updated_at, product.updated_at + Duration::from_secs(90));
    let restocked = world.catalog.set_stock(&admin(), product.id, Stock::parse(3).expect("stock")).await;
    assert_eq!(restocked.expect("admin").stock.get(), 3);
    assert_eq!(world.catalog.get(product.id).await.expect("read").name.as_str(), "Black tea");
}

#[tokio::test]
async fn a_missing_product_is_not_found_and_an_uncached_one_is_not_cached() {
    let world = World::new();
    let missing = ProductId::new(404);
    assert_eq!(world.catalog.get(missing).await, Err(CatalogError::NotFound));
    assert_eq!(world.catalog.patch(&admin(), missing, rename("X")).await, Err(CatalogError::NotFound));
    // These ports have no cache in front: the degraded read has nothing.
    let product = world.catalog.create(&merchant(3), request("A", None), None).await.expect("created");
    assert_eq!(world.catalog.get_cached_only(product.id).await, Err(CatalogError::NotCached));
}

#[tokio::test]
async fn products_list_in_pages_and_per_merchant() {
    let world = World::new();
    let mut ids = Vec::new();
    for (at, owner) in [3, 4, 3, 3].into_iter().enumerate() {
        let created = world.catalog.create(&merchant(owner), request(&format!("S{at}"), None), None).await;
        ids.push(created.expect("created").id);
    }
    let first = world.catalog.list(None, PageRequest::parse(Some(3), None).expect("page")).await.expect("list");
    assert_eq!(first.items.iter().map(|p| p.id).collect::<Vec<_>>(), ids[..3]);
    assert_eq!(first.next_after, Some(ids[2]));
    let rest = world.catalog.list(None, PageRequest::parse(Some(3), first.next_after).expect("page")).await;
    let rest = rest.expect("list");
    assert_eq!((rest.items.len(), rest.next_after), (1, None));
    let of_3 = world.catalog.list(Some(MerchantId::new(3)), PageRequest::parse(None, None).expect("page")).await;
    assert_eq!(of_3.expect("list").items.len(), 3);
}

#[test]
fn a_page_is_between_one_and_the_maximum() {
    assert_eq!(PageRequest::parse(None, None).map(|page| page.limit), Ok(PageRequest::LIMIT_DEFAULT));
    assert!(PageRequest::parse(Some(0), None).is_err());
    assert!(PageRequest::parse(Some(PageRequest::LIMIT_MAX + 1), None).is_err());
    assert!(PageRequest::parse(Some(PageRequest::LIMIT_MAX), None).is_ok());
}

#[test]
fn only_admins_and_owners_manage_products() {
    let owner = MerchantId::new(3);
    assert!(Actor::Merchant(owner).manages(owner));
    assert!(!Actor::Merchant(MerchantId::new(4)).manages(owner));
    assert!(admin().manages(owner));
    assert!(!customer(3).manages(owner));
}
