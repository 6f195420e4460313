//! The batch's pure parts: keys set aside, and the shelf's sharing out.

use surge_domain::flashsale::Quantity;
use surge_domain::order::{Address, CheckoutLine};
use surge_domain::{IdempotencyKey, MerchantId, OrderId, UserId};
use time::OffsetDateTime;

use super::*;

fn checkout(user: i64, key: Option<&str>, lines: &[(i64, u32)]) -> NewCheckout {
    let lines = lines
        .iter()
        .map(|&(product, quantity)| CheckoutLine {
            product_id: ProductId::new(product),
            quantity: Quantity::from_trusted(quantity),
        })
        .collect();
    NewCheckout {
        checkout_id: user,
        user: UserId::new(user),
        orders: vec![NewCheckoutOrder { id: OrderId::new(user), merchant_id: MerchantId::new(1), lines }],
        address: Address::parse("north", "Harbin", "1 Main St", "150000", "123").expect("address"),
        idempotency_key: key.map(|key| IdempotencyKey::parse(key).expect("key")),
        pay_by: OffsetDateTime::UNIX_EPOCH,
        now: OffsetDateTime::UNIX_EPOCH,
    }
}

fn shelf(products: &[(i64, i64)]) -> Shelf {
    let shelved = |left| Shelved { left, sku: "S".to_owned(), price_cents: 100 };
    Shelf::new(products.iter().map(|&(id, left)| (ProductId::new(id), shelved(left))).collect())
}

#[test]
fn a_key_twice_in_a_batch_waits_for_its_first_and_other_buyers_keys_do_not() {
    let batch = [
        checkout(1, Some("k"), &[(1, 1)]),
        checkout(2, Some("k"), &[(1, 1)]),
        checkout(1, Some("k"), &[(1, 1)]),
        checkout(1, None, &[(1, 1)]),
        checkout(1, None, &[(1, 1)]),
    ];
    let batch: Vec<&NewCheckout> = batch.iter().collect();
    assert_eq!(first_of_each_key(&batch), (vec![0, 1, 3, 4], vec![2]));
}

#[test]
fn a_checkout_takes_all_its_lines_or_none_and_names_its_first_refused_product() {
    let mut shelf = shelf(&[(1, 5), (2, 1), (3, 9)]);
    assert_eq!(shelf.take(&checkout(1, None, &[(3, 2), (1, 5)])), Ok(()));
    // Product 1 is now empty and 4 does not exist: 1 comes first.
    assert_eq!(
        shelf.take(&checkout(2, None, &[(4, 1), (1, 1), (2, 1)])),
        Err(Placed::InsufficientStock(ProductId::new(1)))
    );
    assert_eq!(shelf.take(&checkout(3, None, &[(4, 1), (2, 1)])), Err(Placed::UnknownProduct(ProductId::new(4))));
    assert_eq!(shelf.take(&checkout(4, None, &[(2, 1), (3, 7)])), Ok(()));
    assert_eq!(shelf.take(&checkout(5, None, &[(3, 1)])), Err(Placed::InsufficientStock(ProductId::new(3))));
    let taken: Vec<_> = shelf.taken().map(|(product, units)| (product.get(), units)).collect();
    assert_eq!(taken, [(1, 5), (2, 1), (3, 9)]);
}

proptest::proptest! {
    /// Whatever the carts, the units taken of a product never pass what
    /// it had, and are exactly the lines of the checkouts that went.
    #[test]
    fn a_shelf_never_gives_more_than_it_holds(
        stock in proptest::collection::vec(0i64..6, 1..5),
        carts in proptest::collection::vec(proptest::collection::btree_map(0i64..6, 1u32..4, 1..4), 0..40),
    ) {
        let products: Vec<(i64, i64)> = stock.iter().enumerate().map(|(id, left)| (id as i64, *left)).collect();
        let mut shelf = shelf(&products);
        let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
        for (n, cart) in carts.iter().enumerate() {
            let lines: Vec<(i64, u32)> = cart.iter().map(|(product, quantity)| (*product, *quantity)).collect();
            if shelf.take(&checkout(n as i64 + 1, None, &lines)).is_ok() {
                for (product, quantity) in &lines {
                    *expected.entry(*product).or_default() += i64::from(*quantity);
                }
            }
        }
        let taken: BTreeMap<i64, i64> = shelf.taken().map(|(product, units)| (product.get(), units)).collect();
        proptest::prop_assert_eq!(&taken, &expected);
        for (product, units) in taken {
            proptest::prop_assert!(units <= stock[product as usize]);
        }
    }
}
