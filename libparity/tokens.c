/* tokens.c - the tokens `apr verify` evaluates when not its own prompt: a file of ids, or the
 * built-in text below (plain prose written for this project and placed in the
 * public domain; simple vocabulary so that small story models such as the
 * stories260K fixture see text like their training data).
 */
#include "parity.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char builtin_text[] =
    "Once upon a time, in a small town between two green hills, there lived a girl named Mira. "
    "Mira had a red bike, a brown dog called Pip, and a grandmother who knew the name of every "
    "bird in the sky. Every morning Mira rode her bike to the bakery at the end of the road, and "
    "Pip ran beside her with his ears flying in the wind.\n\n"
    "One day the baker, a tall man with flour on his nose, said, \"Mira, I have a problem. My "
    "oven is old and it makes a funny noise. Can you ask your grandmother if she knows someone who "
    "can fix it?\" Mira nodded. She liked to help, and she liked the warm smell of bread even more. "
    "She rode home as fast as she could.\n\n"
    "Her grandmother was sitting in the garden, looking at a blue bird on the fence. \"That is a "
    "little jay,\" she said, before Mira could say a word. \"It is looking for seeds. What is the "
    "hurry, my dear?\" Mira told her about the oven and the funny noise. Grandmother smiled. \"When "
    "I was young, I fixed ovens with my father. Let us go and see.\"\n\n"
    "So the two of them walked back to the bakery, with Pip leading the way. The baker opened the "
    "oven door and the noise began again: tick, tick, bang. Grandmother listened with her head on "
    "one side, the way she listened to birds. Then she took a small tool from her bag, opened a "
    "panel at the back of the oven, and found a loose screw that was rattling against the metal. "
    "She turned it three times, closed the panel, and the noise was gone.\n\n"
    "The baker was so happy that he gave them a basket of warm rolls, two apple cakes, and a bone "
    "for Pip. On the way home Mira asked, \"How did you know where to look?\" Grandmother laughed. "
    "\"A noise is like a bird song. If you listen carefully, it tells you where it comes from. Most "
    "problems are like that. You only have to be patient and listen.\"\n\n"
    "That evening it began to rain. The rain fell on the roof and on the leaves and on the old "
    "wooden fence. Mira sat by the window with a cup of milk and watched the drops run down the "
    "glass. She thought about the oven, and the screw, and the bird on the fence. She decided that "
    "she would learn to listen the way her grandmother did.\n\n"
    "The next morning the sky was clean and bright. Mira took her notebook and went into the "
    "garden. She sat very still under the apple tree and wrote down every sound she heard: a bee "
    "near the flowers, a car far away on the road, a dog barking in the next street, and a soft "
    "whistle that she did not know. She showed the notebook to her grandmother. \"The whistle is a "
    "robin,\" said Grandmother. \"You heard it before you saw it. That is a good start.\"\n\n"
    "Week after week Mira filled her notebook. She learned the sparrow and the crow, the wren and "
    "the owl. She learned that the river sounds different after a storm, and that the wind in the "
    "pine trees sounds like the sea. Pip learned nothing at all, but he was happy to sit beside her "
    "and chew his bone.\n\n"
    "In the autumn the school held a fair. Every child could bring something they had made or "
    "learned. Tom brought a kite shaped like a fish. Lily brought a jar of honey from her uncle's "
    "bees. Sam brought a small boat that could float in a bucket of water. Mira brought her "
    "notebook and a basket of seeds.\n\n"
    "When it was her turn, Mira stood in front of the class and said, \"Please close your eyes and "
    "listen.\" The room became very quiet. Through the open window they heard a robin, then a "
    "crow, then the wind in the big tree by the gate. Mira named each sound, and then she opened "
    "the basket and put some seeds on the window sill. A few minutes later a little jay came down "
    "and took a seed. The children laughed and clapped, and the teacher said it was the best thing "
    "she had seen all year.\n\n"
    "After the fair Mira walked home with her grandmother. The leaves were turning yellow and red, "
    "and the air smelled of apples. \"Are you proud of me?\" Mira asked. \"I am always proud of "
    "you,\" said Grandmother. \"But today I am proud because you taught your friends to listen. That "
    "is a gift that stays with them.\"\n\n"
    "Winter came, and snow covered the hills. The birds were fewer now, but Mira knew where to find "
    "them. She and her grandmother built a small wooden house for the birds and filled it with "
    "seeds every morning. Pip tried to catch the snowflakes with his mouth and sneezed every time. "
    "The baker came by with hot bread and said his oven had not made a single funny noise since the "
    "day Grandmother fixed it.\n\n"
    "One cold night Mira could not sleep. She went to the window and looked at the stars. The world "
    "was so quiet that she could hear the snow falling. She thought that even silence has a sound, "
    "if you listen long enough. Then she went back to bed, pulled the blanket up to her chin, and "
    "fell asleep with a smile on her face.\n\n"
    "When spring returned, the first bird to sing in the garden was the little jay. Mira heard it "
    "before she opened her eyes. She jumped out of bed, ran down the stairs, and found her "
    "grandmother already at the door with two cups of tea. \"It is back,\" said Mira. \"Yes,\" said "
    "Grandmother. \"Good things come back to people who wait for them.\" And they sat together on "
    "the step, in the morning sun, and listened to the new year begin.\n";

const char *apr_parity_builtin_text(void)
{
    return builtin_text;
}

int apr_parity_tokens_file(const char *path, uint32_t vocab, int32_t **ids, size_t *n, apr_err *err)
{
    *ids = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return apr_err_set(err, APR_E_IO, "%s: %s", path, strerror(errno));
    size_t cap = 256, cnt = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) {
        fclose(f);
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    }
    char word[64];
    int rc = 0;
    for (;;) {
        /* read one whitespace-separated word, bounded */
        int c;
        while ((c = fgetc(f)) != EOF && isspace(c))
            ;
        if (c == EOF)
            break;
        size_t wl = 0;
        while (c != EOF && !isspace(c)) {
            if (wl + 1 >= sizeof word) {
                rc = apr_err_set(err, APR_E_FORMAT, "%s: token %zu is too long", path, cnt);
                goto out;
            }
            word[wl++] = (char)c;
            c = fgetc(f);
        }
        word[wl] = 0;
        char *end;
        errno = 0;
        long long x = strtoll(word, &end, 10);
        if (*end || errno || x < 0 || (uint64_t)x >= vocab) {
            rc = apr_err_set(err, APR_E_FORMAT, "%s: token %zu '%s' is not an id in [0, %u)", path,
                             cnt, word, vocab);
            goto out;
        }
        if (cnt == cap) {
            if (cap > ((size_t)1 << 28)) {
                rc = apr_err_set(err, APR_E_FORMAT, "%s: too many tokens", path);
                goto out;
            }
            int32_t *p = realloc(v, cap * 2 * sizeof *v);
            if (!p) {
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
                goto out;
            }
            v = p;
            cap *= 2;
        }
        v[cnt++] = (int32_t)x;
    }
    if (ferror(f))
        rc = apr_err_set(err, APR_E_IO, "%s: read error", path);
    else if (cnt == 0)
        rc = apr_err_set(err, APR_E_FORMAT, "%s: no token ids", path);
out:
    fclose(f);
    if (rc) {
        free(v);
        return rc;
    }
    *ids = v;
    *n = cnt;
    return 0;
}
