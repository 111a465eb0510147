/** Where vitsae finds Fashion-MNIST (the demo's real-image model and the tests read its test set). */

/** Where Debian's dataset-fashion-mnist puts the test images (the labels file sits beside them). */
export const DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz';
/** Environment variable naming Fashion-MNIST's test images elsewhere (any OS, any folder). */
export const FASHION_MNIST_ENV = 'VITSAE_FASHION_MNIST';
/** Fashion-MNIST's test images: the option given, else $VITSAE_FASHION_MNIST, else Debian's path. */
export const fashionMnistPath = (given?: string) => given || process.env[FASHION_MNIST_ENV] || DEBIAN_FASHION_MNIST;
